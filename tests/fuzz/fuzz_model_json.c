/* fuzz_model_json.c -- libFuzzer target: a model folder's JSON files (core_model_load, core/core_reg.c).
 *
 * Input: model.json, then optionally a NUL byte and metrics.json, then
 * optionally another NUL byte and history.json; each is written into a model
 * folder that also holds a valid weights.safetensors of an MLP 4-3-2 (so a
 * manifest with input 1x2x2, two classes and sizes [4,3,2] loads all the way,
 * and the summary and detail documents are built). A torchscript manifest is
 * refused by this build's shim stub after its common fields are parsed. */
#include "fuzz_common.h"

#include <unistd.h>

#include "core_reg.h"

#include "mlp.h"
#include "mlp_io.h"

static const char *g_dir;

/* The model folder with its weights, made once. */
static void setup(void) {
    char err[256], path[1024];
    int sizes[3] = {4, 3, 2};
    g_dir = fuzz_tmpdir("model");
    mlp *net = mlp_new(2, sizes, MLP_ACT_RELU, err, sizeof err);
    if (!net) {
        fprintf(stderr, "mlp_new: %s\n", err);
        exit(1);
    }
    mlp_init_weights(net, MLP_INIT_XAVIER, 1);
    snprintf(path, sizeof path, "%s/weights.safetensors", g_dir);
    if (mlp_save(net, path, err, sizeof err)) {
        fprintf(stderr, "mlp_save: %s\n", err);
        exit(1);
    }
    mlp_free(net);
}

/* Write the next NUL-separated part of the input as dir/name, or remove
 * dir/name when the input has no such part. */
static void put_part(const uint8_t **data, size_t *size, int present, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    if (!present) {
        unlink(path);
        return;
    }
    const uint8_t *nul = memchr(*data, 0, *size);
    size_t n = nul ? (size_t)(nul - *data) : *size;
    fuzz_write_file(g_dir, name, *data, n);
    *data += n + (nul != NULL);
    *size -= n + (nul != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_dir) setup();
    const uint8_t *nul1 = memchr(data, 0, size);
    const uint8_t *nul2 = nul1 ? memchr(nul1 + 1, 0, size - (size_t)(nul1 + 1 - data)) : NULL;
    put_part(&data, &size, 1, "model.json");
    put_part(&data, &size, nul1 != NULL, "metrics.json");
    put_part(&data, &size, nul2 != NULL, "history.json");
    char err[CORE_ERR_LEN] = "";
    core_model *m = core_model_load(g_dir, "fuzz", err, sizeof err);
    if (!m) {
        if (!err[0]) __builtin_trap(); /* every refusal says why */
        return 0;
    }
    /* What the registry promises of a loaded model. */
    if (m->n_classes < 2 || m->channels < 1 || m->width < 1 || m->height < 1 || !m->summary_json ||
        !m->detail_json || !m->net || !(m->std_c[0] > 0))
        __builtin_trap();
    core_model_release(m);
    return 0;
}
