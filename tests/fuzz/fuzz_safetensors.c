/* fuzz_safetensors.c -- libFuzzer target: MLP weights files (mlp_load_buffer, mlp/mlp_io.c).
 *
 * Input: a safetensors file: an 8-byte little-endian header length, the JSON
 * header (dtype, shape, data_offsets per tensor, __metadata__), the data.
 * Loaded with the activation taken from the file's metadata, as `loupe eval`
 * does; a network that loads must have the shape it claims. */
#include "fuzz_common.h"

#include "mlp.h"
#include "mlp_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[256];
    mlp *net = mlp_load_buffer(data, size, MLP_ACT_RELU, 1, err, sizeof err);
    if (!net) {
        if (!err[0]) __builtin_trap(); /* every refusal says why */
        return 0;
    }
    int nl = mlp_n_layers(net);
    if (nl < 1 || mlp_size(net, 0) != mlp_n_inputs(net) || mlp_size(net, nl) != mlp_n_outputs(net)) __builtin_trap();
    /* Every parameter is there to read: touch the last weight and bias of each layer. */
    volatile float sink = 0;
    for (int i = 0; i < nl; i++) {
        size_t nw = (size_t)mlp_size(net, i) * (size_t)mlp_size(net, i + 1);
        sink += mlp_weight_c(net, i)[nw - 1] + mlp_bias_c(net, i)[mlp_size(net, i + 1) - 1];
    }
    (void)sink;
    mlp_free(net);
    return 0;
}
