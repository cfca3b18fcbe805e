/* fuzz_query.c -- libFuzzer target: each image route's query parameters and path parameters (core_opts_parse, core_input_parse_invert).
 *
 * Input: byte 0 picks the operation (predict, saliency, filters,
 * activations, explain, class visualisation) and the model (an MLP, or a CNN whose `features` are faked
 * below); then a line with the {l} path segment, a line with {f}, and the
 * rest is the query string, split and %-decoded by libmicrohttpd's own
 * MHD_http_unescape as the daemon gets it. Reaches top_k; target, format,
 * overlay, scale; the layer and filter lookup; iterations, every, lr, seed;
 * explain's method, samples, noise, steps, baseline, layer, window, stride;
 * the class visualisation's class and l2; and invert; and the samples routes' n, seed and class
 * (srv_samples_parse_*), read from the same string. A CNN's layers come from the shim, which this build stubs out:
 * the link wraps lt_model_n_layers and lt_layer_get_info (-Wl,--wrap) with a
 * fake `features` of conv2d, relu, maxpool2d, conv2d. */
#include "fuzz_common.h"
#include "fuzz_model.h"

#include <microhttpd.h>

#include "core_engine.h"
#include "core_input.h"
#include "core_ops.h"
#include "lt.h"
#include "srv_routes.h"

/* ==== A fake CNN's layers ==== */

#define FAKE_LAYERS 4
static const struct {
    const char *type;
    int is_conv, channels, side;
} fake_layers[FAKE_LAYERS] = {{"conv2d", 1, 16, 32}, {"relu", 0, 16, 32}, {"maxpool2d", 0, 16, 16}, {"conv2d", 1, 32, 16}};

int __wrap_lt_model_n_layers(const lt_model *model);
int __wrap_lt_layer_get_info(const lt_model *model, int layer, lt_layer_info *info, char *err, size_t err_len);

int __wrap_lt_model_n_layers(const lt_model *model) {
    return model ? FAKE_LAYERS : 0;
}

int __wrap_lt_layer_get_info(const lt_model *model, int layer, lt_layer_info *info, char *err, size_t err_len) {
    if (!model || layer < 0 || layer >= FAKE_LAYERS || !info) {
        if (err && err_len) snprintf(err, err_len, "no layer %d", layer);
        return LT_EINVAL;
    }
    memset(info, 0, sizeof *info);
    snprintf(info->type, sizeof info->type, "%s", fake_layers[layer].type);
    info->is_conv = fake_layers[layer].is_conv;
    info->channels = fake_layers[layer].channels;
    info->height = info->width = fake_layers[layer].side;
    return LT_OK;
}

static const core_engine fake_cnn_engine = {"torchscript", 1, 16, 0, NULL, NULL};
static char fake_cnn_handle; /* a non-NULL lt_model* the wrapped functions recognise */

/* ==== The query string ==== */

#define MAX_ARGS 32
typedef struct {
    int n;
    char *key[MAX_ARGS], *val[MAX_ARGS]; /* val NULL: "key" without '=' */
} query;

/* Split s (modified in place) at '&' and '=' and unescape, as libmicrohttpd does. */
static void query_parse(char *s, query *q) {
    q->n = 0;
    while (s && *s && q->n < MAX_ARGS) {
        char *amp = strchr(s, '&');
        if (amp) *amp++ = 0;
        char *eq = strchr(s, '=');
        if (eq) *eq++ = 0;
        MHD_http_unescape(s);
        if (eq) MHD_http_unescape(eq);
        q->key[q->n] = s;
        q->val[q->n++] = eq;
        s = amp;
    }
}

/* The first value of key, as MHD_lookup_connection_value gives it. */
static const char *query_arg(void *ctx, const char *key) {
    const query *q = ctx;
    for (int i = 0; i < q->n; i++)
        if (!strcmp(q->key[i], key)) return q->val[i];
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!size) return 0;
    core_op op = (core_op)(data[0] % 6);
    int cnn = data[0] / 6 % 2;
    data++;
    size--;
    char *layer = fuzz_take_line(&data, &size), *filter = fuzz_take_line(&data, &size);
    char *qs = malloc(size + 1);
    if (!layer || !filter || !qs) goto done;
    memcpy(qs, data, size);
    qs[size] = 0;
    query q;
    query_parse(qs, &q);

    core_model m;
    fuzz_model_init(&m, cnn ? 1 : 0);
    m.engine = cnn ? &fake_cnn_engine : &core_engine_mlp;
    m.cnn = cnn ? (lt_model *)&fake_cnn_handle : NULL;
    core_opts o;
    core_fail f;
    if (!core_opts_parse(&m, op, layer, filter, query_arg, &q, &o, &f)) {
        /* What the operations trust once the options passed. */
        if (op == CORE_OP_PREDICT && (o.top_k < 1 || o.top_k > m.n_classes)) __builtin_trap();
        if (o.target < -1 || o.target >= m.n_classes || o.scale < 1 || o.scale > CORE_MAX_SCALE) __builtin_trap();
        if (op == CORE_OP_FILTERS && (o.viz.iterations < 1 || o.viz.every < 1 || o.viz.every > o.viz.iterations ||
                                      !(o.viz.lr > 0) || o.filter < 0 || o.filter >= fake_layers[o.layer].channels))
            __builtin_trap();
        if (op == CORE_OP_EXPLAIN &&
            ((unsigned)o.method >= CORE_M_COUNT || o.samples < 1 || o.samples > CORE_MAX_SAMPLES || !(o.noise >= 0) ||
             o.noise > CORE_MAX_NOISE || o.steps < 1 || o.steps > CORE_MAX_STEPS || o.window < 1 ||
             o.window > m.height || o.window > m.width || o.stride < 1))
            __builtin_trap();
        if (op == CORE_OP_CLASSVIZ && (o.klass < 0 || o.klass >= m.n_classes || !(o.l2 >= 0) || o.l2 > CORE_MAX_L2 ||
                                       o.viz.every < 1 || o.viz.every > o.viz.iterations))
            __builtin_trap();
    } else if (!f.msg[0]) {
        __builtin_trap();
    }
    img_invert inv;
    (void)core_input_parse_invert(query_arg(&q, "invert"), &inv, &f);
    /* GET /v1/samples and /v1/models/{m}/mistakes read theirs from the same string. */
    int n, cls, given;
    uint64_t seed;
    if (!srv_samples_parse_n(query_arg(&q, "n"), &n, &f) && (n < 1 || n > 100)) __builtin_trap();
    (void)srv_samples_parse_seed(query_arg(&q, "seed"), &seed, &given, &f);
    if (!srv_samples_parse_class(query_arg(&q, "class"), &cls, &f) && (cls < -1 || cls > 9)) __builtin_trap();
done:
    free(layer);
    free(filter);
    free(qs);
    return 0;
}
