/* lt without libtorch (LOUPE_WITH_TORCH=OFF): the API of lt.h, refusing models. */
#include "lt.h"

#include <stdio.h>
#include <string.h>

#define LT_STUB_MESSAGE "this build has no libtorch (LOUPE_WITH_TORCH=OFF)"

static void stub_err(char *err, size_t err_len)
{
    if (err != NULL && err_len > 0)
        snprintf(err, err_len, "%s", LT_STUB_MESSAGE);
}

int lt_available(void)
{
    return 0;
}

lt_model_params lt_model_default_params(void)
{
    lt_model_params p;
    int c;

    memset(&p, 0, sizeof p);
    p.channels = 1;
    p.height = 32;
    p.width = 32;
    for (c = 0; c < LT_MAX_CHANNELS; c++)
        p.std[c] = 1.0f;
    return p;
}

lt_viz_params lt_viz_default_params(void)
{
    lt_viz_params p;

    memset(&p, 0, sizeof p);
    p.iterations = 30;
    p.every = 5;
    p.lr = 0.1f;
    p.weight_decay = 1e-6f;
    return p;
}

int lt_viz_n_frames(const lt_viz_params *p)
{
    if (p == NULL || p->iterations < 1 || p->every < 1)
        return 0;
    return p->iterations / p->every;
}

int lt_set_threads(int intra_op, int inter_op, char *err, size_t err_len)
{
    (void)intra_op;
    (void)inter_op;
    (void)err;
    (void)err_len;
    return LT_OK; /* nothing to configure */
}

lt_model *lt_model_load(const char *path, const lt_model_params *params,
                        char *err, size_t err_len)
{
    (void)path;
    (void)params;
    stub_err(err, err_len);
    return NULL;
}

void lt_model_free(lt_model *model)
{
    (void)model;
}

lt_model_params lt_model_input(const lt_model *model)
{
    (void)model;
    return lt_model_default_params();
}

int lt_model_n_classes(const lt_model *model)
{
    (void)model;
    return 0;
}

int lt_model_n_layers(const lt_model *model)
{
    (void)model;
    return 0;
}

int lt_layer_get_info(const lt_model *model, int layer, lt_layer_info *info,
                      char *err, size_t err_len)
{
    (void)model;
    (void)layer;
    (void)info;
    stub_err(err, err_len);
    return LT_ENOTORCH;
}

int lt_forward(lt_model *model, const float *input, int n, float *logits,
               char *err, size_t err_len)
{
    (void)model;
    (void)input;
    (void)n;
    (void)logits;
    stub_err(err, err_len);
    return LT_ENOTORCH;
}

int lt_activations(lt_model *model, const float *input, int layer, float *out,
                   size_t out_len, char *err, size_t err_len)
{
    (void)model;
    (void)input;
    (void)layer;
    (void)out;
    (void)out_len;
    stub_err(err, err_len);
    return LT_ENOTORCH;
}

int lt_filter_viz(lt_model *model, int layer, int filter, const float *start,
                  const lt_viz_params *params, float *frames,
                  size_t frames_len, float *trace, char *err, size_t err_len)
{
    (void)model;
    (void)layer;
    (void)filter;
    (void)start;
    (void)params;
    (void)frames;
    (void)frames_len;
    (void)trace;
    stub_err(err, err_len);
    return LT_ENOTORCH;
}

int lt_model_splits(const lt_model *model, char *why, size_t why_len)
{
    (void)model;
    stub_err(why, why_len);
    return 0;
}

int lt_cam_default_layer(const lt_model *model)
{
    (void)model;
    return -1;
}

int lt_explain_pass(lt_model *model, const float *input, int n, int target,
                    int guided, float *grad, float *logits, int *targets,
                    char *err, size_t err_len)
{
    (void)model;
    (void)input;
    (void)n;
    (void)target;
    (void)guided;
    (void)grad;
    (void)logits;
    (void)targets;
    stub_err(err, err_len);
    return LT_ENOTORCH;
}

int lt_gradcam(lt_model *model, const float *input, int layer, int target,
               float *layer_map, size_t layer_map_len, float *cam,
               float *logits, int *target_out, char *err, size_t err_len)
{
    (void)model;
    (void)input;
    (void)layer;
    (void)target;
    (void)layer_map;
    (void)layer_map_len;
    (void)cam;
    (void)logits;
    (void)target_out;
    stub_err(err, err_len);
    return LT_ENOTORCH;
}
