/* mlp_io.h -- MLP weights as safetensors files, readable as-is by numpy/PyTorch. */
#ifndef LOUPE_MLP_IO_H
#define LOUPE_MLP_IO_H

#include <stddef.h>
#include "mlp.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest header a loader accepts (the format's own advice is 100 MB; ours are tiny). */
#define MLP_IO_MAX_HEADER (1u << 20)

/* Write net to path as safetensors: tensors "layers.<i>.weight" [out,in] F32 and
 * "layers.<i>.bias" [out] F32, and __metadata__ {"format": "pt", "activation": ...}.
 * The file is written to a temporary name and renamed, so readers never see half
 * a file. Returns 0, or -1 with a message in err. */
int mlp_save(const mlp *net, const char *path, char *err, size_t errlen);

/* Load a network from a safetensors file. The activation comes from act, or,
 * when act_from_file is non-zero and the file's metadata names one, from the
 * file. Before any tensor byte is read the loader checks the header length,
 * the JSON, every dtype, shape and data offset against the file size, that
 * tensors neither overlap nor leave gaps, and that the layers chain
 * (layers.<i>.weight's in = layers.<i-1>.weight's out).
 * Returns a new network, or NULL with a one-sentence reason in err. */
mlp *mlp_load(const char *path, mlp_act act, int act_from_file, char *err, size_t errlen);

/* The same from a buffer already in memory (fuzzing, tests). */
mlp *mlp_load_buffer(const unsigned char *buf, size_t len, mlp_act act, int act_from_file,
                     char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
