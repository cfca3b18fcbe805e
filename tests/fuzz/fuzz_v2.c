/* fuzz_v2.c -- libFuzzer target: KServe V2 infer bodies (srv_v2_parse, server/srv_v2.c).
 *
 * Input: byte 0 picks the model: an MLP of 1x2x2 inputs, a CNN of 2x2x3
 * (mean and std per channel), or an MLP of 1x28x28 with mean 0 and std 1;
 * the rest is the body of POST /v2/models/{m}/infer. Reaches the JSON
 * checks, "outputs", the shape rules of each kind, counting before
 * allocating, FP32 and UINT8 data and UINT8's normalisation. A body that
 * parses must give rows x C*H*W finite values, what a forward pass trusts. */
#include "fuzz_common.h"
#include "fuzz_model.h"

#include <math.h>

#include "core_engine.h"
#include "srv_routes.h"

static const core_engine fake_cnn_engine = {"torchscript", 1, 16, 0, NULL, NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!size) return 0;
    int kind = data[0] % 3;
    core_model m;
    fuzz_model_init(&m, kind == 1 ? 1 : 0);
    if (kind == 0) {
        m.width = m.height = 2;
    } else if (kind == 1) {
        m.channels = 2;
        m.height = 2;
        m.width = 3;
        m.mean_c[1] = 0.5f;
        m.std_c[1] = 0.25f;
    } else {
        m.mean_c[0] = m.mean = 0.0f;
        m.std_c[0] = m.std = 1.0f;
    }
    m.engine = kind == 1 ? &fake_cnn_engine : &core_engine_mlp;
    json_t *doc;
    float *x;
    int rows;
    core_fail f;
    if (srv_v2_parse(&m, data + 1, size - 1, &doc, &x, &rows, &f)) {
        if (doc || x || !f.msg[0]) __builtin_trap();
        return 0;
    }
    size_t n = (size_t)rows * (size_t)(m.channels * m.height * m.width);
    if (!doc || !x || rows < 1 || rows > 65536) __builtin_trap();
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) __builtin_trap();
    json_decref(doc);
    free(x);
    return 0;
}
