/* mlp_ref.c -- numerics of the C engine for comparison against PyTorch (tests/unit/test_mlp_torch.py).
 *
 *   mlp_ref WEIGHTS ACT N X.f32 Y.u8 OUT.f32 [RESAVE]
 *
 * Loads WEIGHTS, reads N input rows (f32) and N labels (u8), and writes to OUT,
 * all f32: logits [N, out]; for each row the input gradient of its label's logit
 * [N, in]; then the gradient of the batch's mean cross-entropy with respect to
 * every parameter (layers.0.weight, layers.0.bias, layers.1.weight, ...), twice:
 * by the default trainer (sparse kernels where the input is mostly zeros) and
 * by the dense one (BLAS for every layer).
 * With RESAVE, the loaded network is also written back there with mlp_save. */
#include <stdio.h>
#include <stdlib.h>

#include "mlp.h"
#include "mlp_io.h"

static int read_all(const char *path, void *buf, size_t size) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t got = fread(buf, 1, size, f);
    fclose(f);
    return got == size ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc < 7) { fprintf(stderr, "usage: mlp_ref WEIGHTS ACT N X Y OUT [RESAVE]\n"); return 2; }
    char err[MLP_ERR_LEN];
    mlp_act act;
    if (mlp_act_parse(argv[2], &act)) { fprintf(stderr, "bad activation\n"); return 2; }
    mlp *net = mlp_load(argv[1], act, 0, err, sizeof err);
    if (!net) { fprintf(stderr, "%s\n", err); return 1; }
    int n = atoi(argv[3]), in = mlp_n_inputs(net), out = mlp_n_outputs(net), L = mlp_n_layers(net);
    float *x = malloc(sizeof(float) * (size_t)n * in), *logits = malloc(sizeof(float) * (size_t)n * out);
    float *grad = malloc(sizeof(float) * (size_t)n * in);
    uint8_t *y = malloc((size_t)n);
    if (read_all(argv[4], x, sizeof(float) * (size_t)n * in) || read_all(argv[5], y, (size_t)n)) {
        fprintf(stderr, "cannot read inputs\n");
        return 1;
    }
    mlp_scratch *s = mlp_scratch_new(net, n);
    mlp_forward(net, s, x, n, logits);
    for (int r = 0; r < n; r++)
        if (mlp_input_grad(net, s, x + (size_t)r * in, y[r], grad + (size_t)r * in, NULL)) return 1;
    FILE *f = fopen(argv[6], "wb");
    if (!f) { fprintf(stderr, "cannot write %s\n", argv[6]); return 1; }
    fwrite(logits, sizeof(float), (size_t)n * out, f);
    fwrite(grad, sizeof(float), (size_t)n * in, f);
    for (int dense = 0; dense < 2; dense++) {
        mlp_sgd_params p = mlp_sgd_default_params();
        p.max_batch = n;
        p.dense = dense;
        mlp_trainer *t = mlp_trainer_new(net, p, err, sizeof err);
        float loss;
        if (!t || mlp_compute_grads(t, x, y, n, &loss)) { fprintf(stderr, "grads failed\n"); return 1; }
        for (int i = 0; i < L; i++) {
            fwrite(mlp_grad_weight(t, i), sizeof(float), (size_t)mlp_size(net, i) * mlp_size(net, i + 1), f);
            fwrite(mlp_grad_bias(t, i), sizeof(float), (size_t)mlp_size(net, i + 1), f);
        }
        mlp_trainer_free(t);
    }
    fclose(f);
    if (argc > 7 && mlp_save(net, argv[7], err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    mlp_scratch_free(s);
    mlp_free(net);
    free(x); free(y); free(logits); free(grad);
    return 0;
}
