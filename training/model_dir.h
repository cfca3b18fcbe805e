/* model_dir.h -- write an MLP model folder of the model store (the contract: docs/model-folder.md). */
#ifndef LOUPE_MODEL_DIR_H
#define LOUPE_MODEL_DIR_H

#include <jansson.h>
#include <stddef.h>

#include "mlp.h"

/* Write the model folder dir whole or not at all: model.json (built here from
 * net, name and training), weights.safetensors, history.json and metrics.json
 * (each when not NULL) go into a temporary folder beside dir (model_dir_begin),
 * which then replaces dir (model_dir_commit; an old dir's checkpoints/ moves
 * into the new folder). Returns 0, or -1 with a message in err that names dir
 * and the reason (e.g. "No space left on device"); dir is then as it was and
 * the temporary folder is gone. Borrows every argument. */
int model_dir_write(const char *dir, const char *name, const mlp *net, json_t *training,
                    json_t *history, json_t *metrics, char *err, size_t errlen);

/* Write a JSON document to path atomically (path.tmp, fsync, rename). */
int model_dir_write_json(const char *path, json_t *doc, char *err, size_t errlen);

/* Start writing the folder dir: create its parents and the empty temporary
 * folder PARENT/.NAME.tmp-PID (the registry never loads a name that starts
 * with '.'); its path goes into tmp. When dir is a symbolic link, the folder it
 * points to is the one written (the link stays). Returns 0, or -1 with a
 * message in err. */
int model_dir_begin(const char *dir, char *tmp, size_t tmplen, char *err, size_t errlen);

/* Put the folder tmp, written whole, in dir's place: fsync every file in it and
 * the folder, move the entries named in carry (NULL-terminated, at most 8; may
 * be NULL) from an existing dir into tmp unless tmp has its own, then swap tmp
 * and dir in one rename (renameat2 RENAME_EXCHANGE; a plain rename when dir does
 * not exist) and remove the old folder. A crash at any moment leaves the old
 * folder or the new one under dir, whole; what remains besides is a hidden
 * .NAME.tmp-PID folder. On a file system without the exchange the old folder is
 * renamed to .NAME.old-PID first, so a crash between the two renames leaves no
 * folder under dir (and the old one whole under that name).
 * Returns 0, or -1 with a message in err: tmp is removed, carried entries are
 * moved back and dir is as it was. */
int model_dir_commit(const char *tmp, const char *dir, const char *const *carry, char *err, size_t errlen);

/* Remove the temporary folder of a write that failed before model_dir_commit. */
void model_dir_abort(const char *tmp);

/* mkdir -p. Returns 0, or -1 with a message in err. */
int model_dir_mkdirs(const char *dir, char *err, size_t errlen);

#endif
