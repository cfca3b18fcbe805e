// lt: the C API of lt.h over libtorch (TorchScript, autograd, Adam).
//
// Every exported function is `extern "C"`, catches every exception and turns
// it into a status code plus a message in the caller's buffer. A model is
// read-only after lt_model_load: its parameters are frozen (requires_grad
// false), so gradient calls only ever differentiate with respect to their own
// input tensor and concurrent calls never write shared state.

#include "lt.h"

#include <torch/script.h>
#include <torch/torch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

struct lt_model {
    torch::jit::Module module;              // the whole classifier, eval mode
    std::vector<torch::jit::Module> layers; // children of `features`, in order
    std::vector<lt_layer_info> info;        // one per layer, for one image
    lt_model_params params;
    int n_classes;
};

namespace {

// Upper bounds that keep a bad argument from allocating without limit.
constexpr int kMaxBatch = 4096;
constexpr int kMaxIterations = 100000;
constexpr int kMaxSide = 4096;

std::once_flag default_threads_once;
std::atomic<bool> threads_were_set{false};

void set_err(char *err, size_t err_len, const char *fmt, ...)
{
    if (err == nullptr || err_len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

// The first line of a c10::Error: its full what() carries a C++ backtrace.
std::string short_message(const char *what)
{
    std::string s(what);
    size_t nl = s.find('\n');
    if (nl != std::string::npos)
        s.resize(nl);
    return s;
}

// Run `fn` and map whatever it throws to a status code and message.
template <typename F>
int guarded(const char *what, char *err, size_t err_len, F fn)
{
    try {
        return fn();
    } catch (const c10::Error &e) {
        set_err(err, err_len, "%s: %s", what,
                short_message(e.what_without_backtrace()).c_str());
        return LT_ETORCH;
    } catch (const std::bad_alloc &) {
        set_err(err, err_len, "%s: out of memory", what);
        return LT_ENOMEM;
    } catch (const std::exception &e) {
        set_err(err, err_len, "%s: %s", what, short_message(e.what()).c_str());
        return LT_ETORCH;
    } catch (...) {
        set_err(err, err_len, "%s: unknown C++ exception", what);
        return LT_ETORCH;
    }
}

int64_t image_numel(const lt_model_params &p)
{
    return static_cast<int64_t>(p.channels) * p.height * p.width;
}

// A tensor that owns a copy of `n` images [n, C, H, W] from the caller.
torch::Tensor input_tensor(const lt_model *m, const float *x, int n)
{
    const lt_model_params &p = m->params;
    return torch::from_blob(const_cast<float *>(x),
                            {n, p.channels, p.height, p.width},
                            torch::kFloat32)
        .clone();
}

// Copy t into dst, which holds exactly `want` floats (the size the caller
// computed from the shapes seen at load). A TorchScript model whose output
// size depends on its input can answer with another size: that is an error,
// never a copy past dst (it overflowed the heap before).
void copy_out(const torch::Tensor &t, float *dst, size_t want)
{
    torch::Tensor c = t.detach().to(torch::kFloat32).contiguous();
    if (static_cast<size_t>(c.numel()) != want)
        throw std::runtime_error("the model answered " + std::to_string(c.numel()) +
                                 " values where its shapes at load give " + std::to_string(want) +
                                 " (an output whose size depends on the input?)");
    std::memcpy(dst, c.data_ptr<float>(), sizeof(float) * want);
}

// features[0..layer] applied to x.
torch::Tensor run_features(const lt_model *m, torch::Tensor x, int layer)
{
    for (int i = 0; i <= layer; i++) {
        torch::jit::Module mod = m->layers[i]; // a handle; shares the object
        x = mod.forward({x}).toTensor();
    }
    return x;
}

torch::Tensor logits_of(const lt_model *m, const torch::Tensor &x)
{
    torch::jit::Module mod = m->module; // a handle; shares the object
    return mod.forward({x}).toTensor();
}

std::string lower(std::string s)
{
    std::transform(s.begin(), s.end(), s.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    return s;
}

bool params_ok(const lt_model_params *p, char *err, size_t err_len)
{
    if (p->channels < 1 || p->channels > LT_MAX_CHANNELS) {
        set_err(err, err_len, "input channels %d not in [1, %d]", p->channels,
                LT_MAX_CHANNELS);
        return false;
    }
    if (p->height < 1 || p->height > kMaxSide || p->width < 1 ||
        p->width > kMaxSide) {
        set_err(err, err_len, "input size %dx%d not in [1, %d]", p->height,
                p->width, kMaxSide);
        return false;
    }
    for (int c = 0; c < p->channels; c++) {
        if (!std::isfinite(p->mean[c]) || !std::isfinite(p->std[c]) ||
            !(p->std[c] > 0)) {
            set_err(err, err_len, "channel %d: mean %g std %g (std must be "
                    "positive and both finite)", c, p->mean[c], p->std[c]);
            return false;
        }
    }
    return true;
}

// Default threads, once, unless lt_set_threads chose them: one intra-op
// thread, because request threads already run in parallel.
void ensure_threads()
{
    std::call_once(default_threads_once, [] {
        if (!threads_were_set)
            at::set_num_threads(1);
    });
}

// splitmix64: a tiny seeded generator, the same on every platform and torch
// version, so a seed always names the same start image.
uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

torch::Tensor random_start(const lt_model *m, uint64_t seed)
{
    const lt_model_params &p = m->params;
    torch::Tensor x = torch::empty({1, p.channels, p.height, p.width},
                                   torch::kFloat32);
    float *v = x.data_ptr<float>();
    uint64_t s = seed;
    int64_t plane = static_cast<int64_t>(p.height) * p.width;
    for (int c = 0; c < p.channels; c++) {
        for (int64_t i = 0; i < plane; i++) {
            double u = (splitmix64(&s) >> 11) * (1.0 / 9007199254740992.0);
            double pixel = (150.0 + 30.0 * u) / 255.0;
            v[c * plane + i] =
                static_cast<float>((pixel - p.mean[c]) / p.std[c]);
        }
    }
    return x;
}

// De-normalise [1, C, H, W] to pixels and clip to [0, 1].
torch::Tensor to_pixels(const lt_model *m, const torch::Tensor &x)
{
    const lt_model_params &p = m->params;
    torch::Tensor mean = torch::from_blob(const_cast<float *>(p.mean),
                                          {1, p.channels, 1, 1},
                                          torch::kFloat32).clone();
    torch::Tensor std = torch::from_blob(const_cast<float *>(p.std),
                                         {1, p.channels, 1, 1},
                                         torch::kFloat32).clone();
    return (x * std + mean).clamp(0.0, 1.0);
}

} // namespace

/* ==== Parameters and threads ==== */

extern "C" int lt_available(void)
{
    return 1;
}

extern "C" lt_model_params lt_model_default_params(void)
{
    lt_model_params p;
    std::memset(&p, 0, sizeof p);
    p.channels = 1;
    p.height = 32;
    p.width = 32;
    for (int c = 0; c < LT_MAX_CHANNELS; c++) {
        p.mean[c] = 0.0f;
        p.std[c] = 1.0f;
    }
    return p;
}

extern "C" lt_viz_params lt_viz_default_params(void)
{
    lt_viz_params p;
    std::memset(&p, 0, sizeof p);
    p.iterations = 30;
    p.every = 5;
    p.lr = 0.1f;
    p.weight_decay = 1e-6f;
    p.seed = 0;
    return p;
}

extern "C" int lt_viz_n_frames(const lt_viz_params *p)
{
    if (p == nullptr || p->iterations < 1 || p->every < 1)
        return 0;
    return p->iterations / p->every;
}

extern "C" int lt_set_threads(int intra_op, int inter_op, char *err,
                              size_t err_len)
{
    return guarded("lt_set_threads", err, err_len, [&]() {
        threads_were_set = true;
        if (intra_op > 0)
            at::set_num_threads(intra_op);
        if (inter_op > 0)
            at::set_num_interop_threads(inter_op);
        ensure_threads();
        return LT_OK;
    });
}

/* ==== Loading ==== */

extern "C" lt_model *lt_model_load(const char *path,
                                   const lt_model_params *params, char *err,
                                   size_t err_len)
{
    if (path == nullptr || params == nullptr) {
        set_err(err, err_len, "lt_model_load: NULL path or params");
        return nullptr;
    }
    if (!params_ok(params, err, err_len))
        return nullptr;
    std::unique_ptr<lt_model> m;
    int rc = guarded("lt_model_load", err, err_len, [&]() {
        ensure_threads();
        m.reset(new lt_model());
        m->params = *params;
        try {
            m->module = torch::jit::load(path, torch::kCPU);
        } catch (const c10::Error &e) {
            set_err(err, err_len, "%s: not a TorchScript file: %s", path,
                    short_message(e.what_without_backtrace()).c_str());
            return LT_ELOAD;
        }
        m->module.eval();
        for (torch::Tensor p : m->module.parameters())
            p.set_requires_grad(false);
        if (!m->module.hasattr("features") ||
            !m->module.attr("features").isModule()) {
            set_err(err, err_len, "%s: the module has no `features` "
                    "submodule (a Sequential of its layers)", path);
            return LT_ELOAD;
        }
        torch::jit::Module features = m->module.attr("features").toModule();
        for (const auto &child : features.named_children())
            m->layers.push_back(child.value);
        if (m->layers.empty()) {
            set_err(err, err_len, "%s: `features` has no layers", path);
            return LT_ELOAD;
        }

        // One zero image through the layers and the whole model: checks the
        // input shape and records every layer's output shape.
        torch::NoGradGuard no_grad;
        const lt_model_params &p = m->params;
        torch::Tensor x = torch::zeros({1, p.channels, p.height, p.width});
        for (size_t i = 0; i < m->layers.size(); i++) {
            lt_layer_info li;
            std::memset(&li, 0, sizeof li);
            auto type = m->layers[i].type()->name();
            std::string name = type ? lower(type->name()) : "module";
            std::snprintf(li.type, sizeof li.type, "%s", name.c_str());
            li.is_conv = name == "conv2d";
            try {
                x = m->layers[i].forward({x}).toTensor();
            } catch (const c10::Error &e) {
                set_err(err, err_len, "%s: layer %zu (%s) fails on a "
                        "%dx%dx%d input: %s", path, i, li.type, p.channels,
                        p.height, p.width,
                        short_message(e.what_without_backtrace()).c_str());
                return LT_ELOAD;
            }
            if (x.dim() != 4 || x.size(0) != 1) {
                set_err(err, err_len, "%s: layer %zu (%s) does not output "
                        "[N, C, H, W]", path, i, li.type);
                return LT_ELOAD;
            }
            li.channels = static_cast<int>(x.size(1));
            li.height = static_cast<int>(x.size(2));
            li.width = static_cast<int>(x.size(3));
            m->info.push_back(li);
        }
        torch::Tensor z = torch::zeros({1, p.channels, p.height, p.width});
        torch::Tensor out;
        try {
            out = logits_of(m.get(), z);
            out = logits_of(m.get(), z); // the executor optimises on run 2
        } catch (const c10::Error &e) {
            set_err(err, err_len, "%s: forward fails on a %dx%dx%d input: %s",
                    path, p.channels, p.height, p.width,
                    short_message(e.what_without_backtrace()).c_str());
            return LT_ELOAD;
        }
        if (out.dim() != 2 || out.size(0) != 1 || out.size(1) < 1) {
            set_err(err, err_len, "%s: forward returns shape %s, not logits "
                    "[N, K]", path, c10::str(out.sizes()).c_str());
            return LT_ELOAD;
        }
        m->n_classes = static_cast<int>(out.size(1));
        return LT_OK;
    });
    if (rc != LT_OK)
        return nullptr;
    return m.release();
}

extern "C" void lt_model_free(lt_model *model)
{
    try {
        delete model;
    } catch (...) {
        // A destructor that throws has nowhere to report; the memory is lost.
    }
}

extern "C" lt_model_params lt_model_input(const lt_model *model)
{
    return model ? model->params : lt_model_default_params();
}

extern "C" int lt_model_n_classes(const lt_model *model)
{
    return model ? model->n_classes : 0;
}

extern "C" int lt_model_n_layers(const lt_model *model)
{
    return model ? static_cast<int>(model->layers.size()) : 0;
}

extern "C" int lt_layer_get_info(const lt_model *model, int layer,
                                 lt_layer_info *info, char *err,
                                 size_t err_len)
{
    if (model == nullptr || info == nullptr) {
        set_err(err, err_len, "lt_layer_get_info: NULL argument");
        return LT_EINVAL;
    }
    int n = static_cast<int>(model->info.size());
    if (layer < 0 || layer >= n) {
        set_err(err, err_len, "layer %d does not exist (valid: 0..%d)", layer,
                n - 1);
        return LT_EINVAL;
    }
    *info = model->info[layer];
    return LT_OK;
}

/* ==== Inference ==== */

extern "C" int lt_forward(lt_model *model, const float *input, int n,
                          float *logits, char *err, size_t err_len)
{
    if (model == nullptr || input == nullptr || logits == nullptr) {
        set_err(err, err_len, "lt_forward: NULL argument");
        return LT_EINVAL;
    }
    if (n < 1 || n > kMaxBatch) {
        set_err(err, err_len, "batch size %d not in [1, %d]", n, kMaxBatch);
        return LT_EINVAL;
    }
    return guarded("lt_forward", err, err_len, [&]() {
        torch::NoGradGuard no_grad;
        torch::Tensor out = logits_of(model, input_tensor(model, input, n));
        copy_out(out, logits, static_cast<size_t>(n) * model->n_classes);
        return LT_OK;
    });
}

extern "C" int lt_input_grad(lt_model *model, const float *input, int target,
                             float *grad, float *logits, char *err,
                             size_t err_len)
{
    if (model == nullptr || input == nullptr || grad == nullptr) {
        set_err(err, err_len, "lt_input_grad: NULL argument");
        return LT_EINVAL;
    }
    if (target < 0 || target >= model->n_classes) {
        set_err(err, err_len, "target class %d does not exist (valid: 0..%d)",
                target, model->n_classes - 1);
        return LT_EINVAL;
    }
    return guarded("lt_input_grad", err, err_len, [&]() {
        torch::AutoGradMode grad_mode(true);
        torch::Tensor x = input_tensor(model, input, 1).requires_grad_(true);
        torch::Tensor out = logits_of(model, x);
        torch::Tensor score = out.select(1, target).sum();
        torch::Tensor g = torch::autograd::grad({score}, {x})[0];
        copy_out(g, grad, static_cast<size_t>(image_numel(model->params)));
        if (logits != nullptr)
            copy_out(out, logits, static_cast<size_t>(model->n_classes));
        return LT_OK;
    });
}

extern "C" int lt_activations(lt_model *model, const float *input, int layer,
                              float *out, size_t out_len, char *err,
                              size_t err_len)
{
    if (model == nullptr || input == nullptr || out == nullptr) {
        set_err(err, err_len, "lt_activations: NULL argument");
        return LT_EINVAL;
    }
    lt_layer_info li;
    int rc = lt_layer_get_info(model, layer, &li, err, err_len);
    if (rc != LT_OK)
        return rc;
    size_t need = static_cast<size_t>(li.channels) * li.height * li.width;
    if (out_len < need) {
        set_err(err, err_len, "output buffer holds %zu floats, layer %d "
                "needs %zu", out_len, layer, need);
        return LT_EINVAL;
    }
    return guarded("lt_activations", err, err_len, [&]() {
        torch::NoGradGuard no_grad;
        torch::Tensor a = run_features(model, input_tensor(model, input, 1),
                                       layer);
        // A later in-place layer could overwrite `a`; none runs after it
        // here, and copy_out copies it out before the call returns.
        copy_out(a, out, need);
        return LT_OK;
    });
}

/* ==== Filter visualisation ==== */

extern "C" int lt_filter_viz(lt_model *model, int layer, int filter,
                             const float *start, const lt_viz_params *params,
                             float *frames, size_t frames_len, float *trace,
                             char *err, size_t err_len)
{
    if (model == nullptr || params == nullptr || frames == nullptr) {
        set_err(err, err_len, "lt_filter_viz: NULL argument");
        return LT_EINVAL;
    }
    lt_layer_info li;
    int rc = lt_layer_get_info(model, layer, &li, err, err_len);
    if (rc != LT_OK)
        return rc;
    if (!li.is_conv) {
        set_err(err, err_len, "layer %d is %s, not a convolution", layer,
                li.type);
        return LT_EINVAL;
    }
    if (filter < 0 || filter >= li.channels) {
        set_err(err, err_len, "filter %d does not exist in layer %d "
                "(valid: 0..%d)", filter, layer, li.channels - 1);
        return LT_EINVAL;
    }
    const lt_viz_params p = *params;
    if (p.iterations < 1 || p.iterations > kMaxIterations) {
        set_err(err, err_len, "iterations %d not in [1, %d]", p.iterations,
                kMaxIterations);
        return LT_EINVAL;
    }
    if (p.every < 1 || p.every > p.iterations) {
        set_err(err, err_len, "every %d not in [1, iterations=%d]", p.every,
                p.iterations);
        return LT_EINVAL;
    }
    if (!std::isfinite(p.lr) || !(p.lr > 0) || !std::isfinite(p.weight_decay)
        || p.weight_decay < 0) {
        set_err(err, err_len, "lr %g must be positive and weight decay %g "
                "non-negative", p.lr, p.weight_decay);
        return LT_EINVAL;
    }
    int n_frames = lt_viz_n_frames(&p);
    int64_t per = image_numel(model->params);
    size_t need = static_cast<size_t>(n_frames) * static_cast<size_t>(per);
    if (frames_len < need) {
        set_err(err, err_len, "frames buffer holds %zu floats, %d frames "
                "need %zu", frames_len, n_frames, need);
        return LT_EINVAL;
    }
    return guarded("lt_filter_viz", err, err_len, [&]() {
        torch::AutoGradMode grad_mode(true);
        torch::Tensor img = start ? input_tensor(model, start, 1)
                                  : random_start(model, p.seed);
        img.requires_grad_(true);
        torch::optim::Adam opt(
            std::vector<torch::Tensor>{img},
            torch::optim::AdamOptions(p.lr).weight_decay(p.weight_decay));
        int frame = 0;
        for (int i = 1; i <= p.iterations; i++) {
            torch::Tensor act = run_features(model, img, layer);
            torch::Tensor loss = -act.select(1, filter).mean();
            if (trace != nullptr)
                trace[i - 1] = -loss.item<float>();
            img.mutable_grad() = torch::autograd::grad({loss}, {img})[0];
            opt.step();
            if (i % p.every == 0) {
                torch::NoGradGuard no_grad;
                copy_out(to_pixels(model, img.detach()),
                         frames + static_cast<size_t>(frame) * per, static_cast<size_t>(per));
                frame++;
            }
        }
        if (trace != nullptr) {
            torch::NoGradGuard no_grad;
            trace[p.iterations] = run_features(model, img.detach(), layer)
                                      .select(1, filter).mean().item<float>();
        }
        return LT_OK;
    });
}
