/* lt: a C API over libtorch for TorchScript image classifiers with a `features` Sequential. */
#ifndef LOUPE_LT_H
#define LOUPE_LT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Every function that can fail returns an int (0 on success, one of the
 * negative LT_E* codes below on failure) or a pointer (NULL on failure), and
 * writes a NUL-terminated message into the caller's `err` buffer of `err_len`
 * bytes (`err` may be NULL; the message is truncated to fit). No C++
 * exception crosses this API. Tensors are dense float32, row-major, shapes
 * in the comments; the library never keeps a caller's pointer after a call.
 *
 * Threads: one lt_model may be used from many threads at once (forward,
 * gradients, activations, filter visualisation); each call keeps its own
 * tensors. Call lt_set_threads once at start-up, before any other call.
 * A build without libtorch (LOUPE_WITH_TORCH=OFF) has the same API:
 * lt_available returns 0, lt_model_load returns NULL with a message saying
 * so, and the int functions return LT_ENOTORCH.
 */

enum lt_status {
    LT_OK = 0,
    LT_EINVAL = -1,   /* bad argument: NULL pointer, size, index out of range */
    LT_ELOAD = -2,    /* the file is not a usable TorchScript classifier */
    LT_ETORCH = -3,   /* libtorch raised an error while computing */
    LT_ENOMEM = -4,   /* out of memory, or a caller buffer too small */
    LT_ENOTORCH = -5  /* this build has no libtorch */
};

#define LT_MAX_CHANNELS 4   /* input channels a model may have */
#define LT_TYPE_LEN 32      /* bytes of lt_layer_info.type, with the NUL */

typedef struct lt_model lt_model;

/* How the model's input looks; the caller takes it from model.json's input. */
typedef struct lt_model_params {
    int channels;                /* C of the input [N, C, H, W] */
    int height;                  /* H */
    int width;                   /* W */
    float mean[LT_MAX_CHANNELS]; /* per channel: x = (pixel - mean) / std */
    float std[LT_MAX_CHANNELS];  /* pixel in [0, 1] */
} lt_model_params;

/* One module of `features`. */
typedef struct lt_layer_info {
    char type[LT_TYPE_LEN]; /* torch class name in lower case, e.g. "conv2d" */
    int is_conv;            /* 1 for a 2-D convolution */
    int channels;           /* output shape for one input image: [C, H, W] */
    int height;
    int width;
} lt_layer_info;

/* Activation maximisation (filter visualisation) settings. */
typedef struct lt_viz_params {
    int iterations;     /* Adam steps; default 30 */
    int every;          /* a frame after every `every`-th step; default 5 */
    float lr;           /* Adam learning rate; default 0.1 */
    float weight_decay; /* Adam L2 weight decay; default 1e-6 */
    uint64_t seed;      /* random start image; default 0 */
} lt_viz_params;

/* 1 when this build can load TorchScript models, 0 when it is the stub. */
int lt_available(void);

/* Defaults: 1x32x32, mean 0, std 1. */
lt_model_params lt_model_default_params(void);
/* Defaults: 30 iterations, a frame every 5, lr 0.1, weight decay 1e-6, seed 0. */
lt_viz_params lt_viz_default_params(void);

/*
 * Set libtorch's intra-op and inter-op thread counts (<= 0 leaves one
 * unchanged). Call once, before loading a model: inter-op threads can be set
 * only once per process. Returns 0 or a negative code.
 */
int lt_set_threads(int intra_op, int inter_op, char *err, size_t err_len);

/*
 * Load a TorchScript file saved by torch.jit.save. The module must have a
 * `features` submodule whose children run in order, and must map
 * [N, C, H, W] to logits [N, K]; both are checked by running a zero image
 * through it. Returns a model the caller frees with lt_model_free, or NULL.
 */
lt_model *lt_model_load(const char *path, const lt_model_params *params,
                        char *err, size_t err_len);

/* Free a model; NULL is accepted. Calls still running on it must end first. */
void lt_model_free(lt_model *model);

/* The load-time parameters; the number of classes K; of `features` layers. */
lt_model_params lt_model_input(const lt_model *model);
int lt_model_n_classes(const lt_model *model);
int lt_model_n_layers(const lt_model *model);

/* Describe layer `layer` of `features` into *info. 0, or LT_EINVAL. */
int lt_layer_get_info(const lt_model *model, int layer, lt_layer_info *info,
                      char *err, size_t err_len);

/*
 * Logits of a batch, without gradients.
 * input:  [n, C, H, W] normalised as lt_model_params says
 * logits: [n, K] written by the call
 */
int lt_forward(lt_model *model, const float *input, int n, float *logits,
               char *err, size_t err_len);

/*
 * The output of layer `layer` of `features` for one image: features[0..layer]
 * run in order, the result copied out.
 * input: [C, H, W] normalised
 * out:   [c, h, w] of lt_layer_get_info(layer); `out_len` floats available
 */
int lt_activations(lt_model *model, const float *input, int layer, float *out,
                   size_t out_len, char *err, size_t err_len);

/* Frames lt_filter_viz writes: floor(iterations / every) (0 if invalid). */
int lt_viz_n_frames(const lt_viz_params *params);

/*
 * Activation maximisation of filter `filter` of the convolution `layer` of
 * `features`: the image is optimised with Adam to raise the filter's mean
 * activation (loss = -mean over the map). It starts from `start` ([C, H, W],
 * normalised) or, when `start` is NULL, from a seeded random image (pixels
 * uniform in [150, 180] / 255, as pytorch-cnn-visualizations does). After
 * step i (1-based) with i % every == 0 the image is de-normalised, clipped to
 * [0, 1] and written as a frame; the start image is not a frame.
 * frames:    [n_frames, C, H, W], n_frames = lt_viz_n_frames(params);
 *            `frames_len` floats available
 * trace:     [iterations + 1] mean activation before step 1, after each
 *            step (optional, may be NULL; costs one more forward pass)
 * The same model, arguments and seed give the same frames.
 */
int lt_filter_viz(lt_model *model, int layer, int filter, const float *start,
                  const lt_viz_params *params, float *frames,
                  size_t frames_len, float *trace, char *err, size_t err_len);

/* ==== Explanations ==== */

/*
 * 1 when the model is its `features` followed by a head: its output equals
 * head(features(x)), head being classifier(flatten(avgpool(y))) when it has
 * an `avgpool` submodule, else classifier(y) (checked at load on a seeded
 * random probe). Grad-CAM and guided backprop need it; when it is 0, `why`
 * says what failed.
 */
int lt_model_splits(const lt_model *model, char *why, size_t why_len);

/* Grad-CAM's default layer: the first ReLU after the last Conv2d of
 * `features`; -1 when `features` has no convolution. */
int lt_cam_default_layer(const lt_model *model);

/*
 * Logits and input gradients of n inputs in one batched pass.
 * input:   [n, C, H, W] normalised
 * target:  the class whose logit is differentiated, or < 0 for each row's
 *          own predicted class (the argmax of that row's logits)
 * guided:  1: guided backprop: every ReLU of `features` and of the head lets
 *          back only positive gradients where its input was positive (needs
 *          lt_model_splits); 0: the plain gradient
 * grad:    [n, C, H, W] d logits[i][t_i] / d input[i]; NULL: logits only,
 *          without autograd
 * logits:  [n, K] (may be NULL); targets: [n] the t_i used (may be NULL)
 * A model that splits runs as its layers, with the ATen calls its modules
 * make (no interpreter between them): the same values as the whole model.
 */
int lt_explain_pass(lt_model *model, const float *input, int n, int target,
                    int guided, float *grad, float *logits, int *targets,
                    char *err, size_t err_len);

/*
 * Grad-CAM (Selvaraju 2017) of one input at layer `layer` of `features`:
 * A = that layer's output [k, h, w], w_k = the spatial mean of
 * d score / d A_k, layer_map = ReLU(sum_k w_k A_k) [h, w] (`layer_map_len`
 * floats available), cam = layer_map resized to the input's H x W as
 * torch's bilinear interpolate with align_corners=False does [H, W].
 * target < 0: the predicted class; the class used goes to *target_out and
 * the logits [K] to `logits` (both may be NULL). Needs lt_model_splits.
 */
int lt_gradcam(lt_model *model, const float *input, int layer, int target,
               float *layer_map, size_t layer_map_len, float *cam,
               float *logits, int *target_out, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif /* LOUPE_LT_H */
