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

// One module of the model as the explanation passes run it: natively with
// the ATen calls its forward makes where its kind is known (no interpreter
// between layers; a ReLU can be made guided), else through its own forward.
struct lt_step {
    enum Kind { MODULE, CONV, BN, RELU, MAXPOOL, ADAPTIVE_AVG, LINEAR, IDENTITY, FLATTEN } kind = MODULE;
    torch::jit::Module mod;   // the module itself (MODULE, and the fallback)
    torch::Tensor w, b;       // CONV, LINEAR: weight and bias (b may be undefined)
    torch::Tensor mean, var;  // BN: running statistics; w, b: its affine (may be undefined)
    double eps = 1e-5;
    std::vector<int64_t> stride, padding, dilation, kernel, out_size;
    int64_t groups = 1;
    bool ceil_mode = false;
    torch::Tensor scale;      // BN: gamma / sqrt(var + eps), [1, C, 1, 1] (its backward in eval mode)
};

struct lt_model {
    torch::jit::Module module;              // the whole classifier, eval mode
    std::vector<torch::jit::Module> layers; // children of `features`, in order
    std::vector<lt_layer_info> info;        // one per layer, for one image
    lt_model_params params;
    int n_classes;
    // The explanation passes: `features` then the head, step by step.
    std::vector<lt_step> feat;              // one per layer of `features`
    std::vector<lt_step> head;              // avgpool, flatten, classifier's children
    bool splits = false;                    // head(features(x)) == module(x), checked at load
    bool native = false;                    // the steps run natively (else each module's forward)
    bool taped = false;                     // every step native: gradients by the tape, not autograd
    std::string split_why;                  // why not, when !splits
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


/* ==== The explanation passes: the model as its steps ==== */

// ReLU whose backward lets through only positive gradients where its input
// was positive (guided backprop, Springenberg et al. 2015).
struct GuidedRelu : public torch::autograd::Function<GuidedRelu> {
    static torch::Tensor forward(torch::autograd::AutogradContext *ctx, torch::Tensor x)
    {
        torch::Tensor y = torch::relu(x);
        ctx->save_for_backward({y});
        return y;
    }
    static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                   torch::autograd::variable_list g)
    {
        torch::Tensor y = ctx->get_saved_variables()[0];
        return {g[0].clamp_min(0) * (y > 0).to(g[0].scalar_type())};
    }
};

std::string type_name(const torch::jit::Module &mod)
{
    auto t = mod.type()->name();
    return t ? lower(t->name()) : "module";
}

// An int or a tuple/list of ints as `n` values; false for anything else.
bool ints_of(const c10::optional<c10::IValue> &v, size_t n, std::vector<int64_t> &out)
{
    out.clear();
    if (!v)
        return false;
    if (v->isInt()) {
        out.assign(n, v->toInt());
        return true;
    }
    std::vector<c10::IValue> items;
    if (v->isTuple())
        items = v->toTupleRef().elements().vec();
    else if (v->isIntList())
        for (int64_t i : v->toIntVector())
            items.emplace_back(i);
    else
        return false;
    for (const c10::IValue &i : items) {
        if (!i.isInt())
            return false;
        out.push_back(i.toInt());
    }
    return out.size() == n;
}

c10::optional<c10::IValue> constant(const torch::jit::Module &mod, const char *name)
{
    return mod.type()->findConstant(name);
}

torch::Tensor tensor_attr(const torch::jit::Module &mod, const char *name)
{
    if (!mod.hasattr(name))
        return torch::Tensor();
    c10::IValue v = mod.attr(name);
    return v.isTensor() ? v.toTensor() : torch::Tensor();
}

// One step for `mod`: native when its kind and settings are the plain ones.
lt_step make_step(const torch::jit::Module &mod)
{
    lt_step s;
    s.mod = mod;
    std::string t = type_name(mod);
    if (t == "relu") {
        s.kind = lt_step::RELU;
    } else if (t == "dropout" || t == "dropout2d" || t == "identity") {
        s.kind = lt_step::IDENTITY; // eval mode
    } else if (t == "conv2d") {
        auto mode = constant(mod, "padding_mode");
        s.w = tensor_attr(mod, "weight");
        s.b = tensor_attr(mod, "bias");
        auto g = constant(mod, "groups");
        if (mode && mode->isString() && mode->toStringRef() == "zeros" && s.w.defined() && s.w.dim() == 4 &&
            ints_of(constant(mod, "stride"), 2, s.stride) && ints_of(constant(mod, "padding"), 2, s.padding) &&
            ints_of(constant(mod, "dilation"), 2, s.dilation) && g && g->isInt()) {
            s.groups = g->toInt();
            s.kind = lt_step::CONV;
        }
    } else if (t == "batchnorm2d") {
        s.mean = tensor_attr(mod, "running_mean");
        s.var = tensor_attr(mod, "running_var");
        s.w = tensor_attr(mod, "weight");
        s.b = tensor_attr(mod, "bias");
        auto eps = constant(mod, "eps");
        if (s.mean.defined() && s.var.defined() && eps && eps->isDouble()) {
            s.eps = eps->toDouble();
            s.kind = lt_step::BN;
        }
    } else if (t == "maxpool2d") {
        auto ri = constant(mod, "return_indices"), cm = constant(mod, "ceil_mode");
        auto st = constant(mod, "stride");
        bool ok = ints_of(constant(mod, "kernel_size"), 2, s.kernel) &&
                  ints_of(constant(mod, "padding"), 2, s.padding) &&
                  ints_of(constant(mod, "dilation"), 2, s.dilation) && ri && ri->isBool() && !ri->toBool() &&
                  cm && cm->isBool();
        if (ok && st && st->isNone())
            s.stride = s.kernel;
        else
            ok = ok && ints_of(st, 2, s.stride);
        if (ok) {
            s.ceil_mode = cm->toBool();
            s.kind = lt_step::MAXPOOL;
        }
    } else if (t == "adaptiveavgpool2d") {
        if (ints_of(constant(mod, "output_size"), 2, s.out_size))
            s.kind = lt_step::ADAPTIVE_AVG;
    } else if (t == "linear") {
        s.w = tensor_attr(mod, "weight");
        s.b = tensor_attr(mod, "bias");
        if (s.w.defined() && s.w.dim() == 2)
            s.kind = lt_step::LINEAR;
    }
    return s;
}

// The steps of a Sequential (its children, nested ones flattened), or the module as one step.
void append_steps(const torch::jit::Module &mod, std::vector<lt_step> &out)
{
    if (type_name(mod) != "sequential") {
        out.push_back(make_step(mod));
        return;
    }
    for (const auto &child : mod.named_children())
        append_steps(child.value, out);
}

torch::Tensor run_step(const lt_step &s, const torch::Tensor &x, bool native, bool guided)
{
    if (s.kind == lt_step::RELU)
        return guided ? GuidedRelu::apply(x) : torch::relu(x);
    if (s.kind == lt_step::IDENTITY)
        return x;
    if (s.kind == lt_step::FLATTEN) // the head's own step: no module behind it
        return torch::flatten(x, 1);
    if (!native || s.kind == lt_step::MODULE) {
        torch::jit::Module mod = s.mod; // a handle; shares the object
        return mod.forward({x}).toTensor();
    }
    switch (s.kind) {
    case lt_step::CONV:
        return torch::conv2d(x, s.w, s.b, s.stride, s.padding, s.dilation, s.groups);
    case lt_step::BN:
        return torch::batch_norm(x, s.w, s.b, s.mean, s.var, false, 0.0, s.eps, false);
    case lt_step::MAXPOOL:
        return torch::max_pool2d(x, s.kernel, s.stride, s.padding, s.dilation, s.ceil_mode);
    case lt_step::ADAPTIVE_AVG:
        return torch::adaptive_avg_pool2d(x, s.out_size);
    case lt_step::LINEAR:
        return torch::linear(x, s.w, s.b);
    default:
        throw std::logic_error("unhandled step");
    }
}

// steps[from..to] on x, through autograd when gradients are recorded.
// BatchNorm is never folded into the convolution's weights: that changes the
// forward values' rounding, and with it which element wins a max-pool window
// of near-equal values, which moved gradients far past 1e-4 on a barely
// trained VGG.
torch::Tensor run_steps(const lt_model *m, const std::vector<lt_step> &steps, torch::Tensor x, size_t from,
                        size_t to, bool guided)
{
    for (size_t i = from; i <= to && i < steps.size(); i++)
        x = run_step(steps[i], x, m->native, guided);
    return x;
}

// ---- The tape: gradients without autograd ----
//
// When every step is native, the explanation passes record what each step's
// backward needs and run the backward themselves: no autograd graph, no
// nodes, no gradient buffers of frozen weights. The forward makes the
// modules' own ATen calls, so its values are the model's to the bit (which
// element wins each max-pool window included); the backward is the
// chain rule written out per kind:
//   Conv2d   the input gradient alone (convolution_backward, output_mask
//            {input}: oneDNN where the forward used it)
//   BN+ReLU  g * gamma / sqrt(var + eps), zero where the output is not
//            positive (guided: and where g is not positive)
//   MaxPool  max_pool2d_with_indices_backward with the forward's indices
//   Linear   g W;  avgpool, flatten: their shapes back
struct tape_entry {
    const lt_step *s;
    const lt_step *bn;  // a BatchNorm run with the ReLU that follows it (s), or null
    torch::Tensor in, out, idx;
};

torch::Tensor tape_forward(const std::vector<lt_step> &steps, torch::Tensor x, size_t from, size_t to,
                           std::vector<tape_entry> &tape)
{
    for (size_t i = from; i <= to && i < steps.size(); i++) {
        const lt_step &s = steps[i];
        tape_entry e{&s, nullptr, x, torch::Tensor(), torch::Tensor()};
        if (s.kind == lt_step::BN && i + 1 <= to && steps[i + 1].kind == lt_step::RELU) {
            x = run_step(s, x, true, false).relu_(); // BN's output is no one else's: ReLU in place
            e.bn = &s;
            e.s = &steps[++i];
        } else if (s.kind == lt_step::MAXPOOL) {
            auto r = torch::max_pool2d_with_indices(x, s.kernel, s.stride, s.padding, s.dilation, s.ceil_mode);
            x = std::get<0>(r);
            e.idx = std::get<1>(r);
        } else {
            x = run_step(s, x, true, false);
        }
        e.out = x;
        tape.push_back(e);
    }
    return x;
}

torch::Tensor tape_backward(const std::vector<tape_entry> &tape, torch::Tensor g, bool guided)
{
    for (auto it = tape.rbegin(); it != tape.rend(); ++it) {
        const lt_step &s = *it->s;
        switch (s.kind) {
        case lt_step::RELU:
            // ReLU's own backward kernel (zero where the output is not positive), after BatchNorm's scale;
            // guided: negative gradients are dropped first.
            if (guided)
                g = g.clamp_min(0);
            g = at::threshold_backward(it->bn ? g * it->bn->scale : g, it->out, 0);
            break;
        case lt_step::BN:
            g = g * s.scale;
            break;
        case lt_step::CONV:
            g = std::get<0>(at::convolution_backward(g, it->in, s.w, c10::nullopt, s.stride, s.padding, s.dilation,
                                                     false, {0, 0}, s.groups, {true, false, false}));
            break;
        case lt_step::MAXPOOL:
            g = at::max_pool2d_with_indices_backward(g, it->in, s.kernel, s.stride, s.padding, s.dilation,
                                                     s.ceil_mode, it->idx);
            break;
        case lt_step::ADAPTIVE_AVG:
            g = at::_adaptive_avg_pool2d_backward(g.contiguous(), it->in);
            break;
        case lt_step::LINEAR:
            g = g.matmul(s.w);
            break;
        case lt_step::FLATTEN:
            g = g.reshape(it->in.sizes());
            break;
        case lt_step::IDENTITY:
            break;
        default:
            throw std::logic_error("a step the tape cannot differentiate");
        }
    }
    return g;
}

// d sum_i out[i][t_i] / d x for the tape that made out from x.
torch::Tensor tape_grad(const std::vector<tape_entry> &tape, const torch::Tensor &out, const torch::Tensor &t,
                        bool guided)
{
    torch::Tensor g = torch::zeros_like(out);
    g.scatter_(1, t.view({-1, 1}), 1.0);
    return tape_backward(tape, g, guided);
}

// BatchNorm's eval-mode backward scale, and whether every step is native.
void prepare_tape(lt_model *m)
{
    torch::NoGradGuard no_grad;
    bool all = true;
    for (std::vector<lt_step> *steps : {&m->feat, &m->head})
        for (lt_step &s : *steps) {
            if (s.kind == lt_step::BN) {
                torch::Tensor scale = (s.var + s.eps).rsqrt();
                if (s.w.defined())
                    scale = s.w * scale;
                s.scale = scale.view({1, -1, 1, 1}).contiguous();
            }
            all = all && s.kind != lt_step::MODULE;
        }
    m->taped = m->native && all;
}

torch::Tensor run_head(const lt_model *m, torch::Tensor y, bool guided)
{
    return m->head.empty() ? y : run_steps(m, m->head, y, 0, m->head.size() - 1, guided);
}

torch::Tensor run_plan(const lt_model *m, const torch::Tensor &x, bool guided)
{
    return run_head(m, run_steps(m, m->feat, x, 0, m->feat.size() - 1, guided), guided);
}

// Build the steps and check them against the whole model on a seeded probe:
// natively first, then module by module; sets splits, native, split_why.
void build_plan(lt_model *m)
{
    m->splits = m->native = false;
    m->feat.clear();
    m->head.clear();
    if (!m->module.hasattr("classifier") || !m->module.attr("classifier").isModule()) {
        m->split_why = "the model has no `classifier` submodule to split it at a layer";
        return;
    }
    for (const torch::jit::Module &l : m->layers)
        m->feat.push_back(make_step(l));
    if (m->module.hasattr("avgpool") && m->module.attr("avgpool").isModule()) {
        m->head.push_back(make_step(m->module.attr("avgpool").toModule()));
        lt_step flat;
        flat.kind = lt_step::FLATTEN;
        m->head.push_back(flat);
    }
    append_steps(m->module.attr("classifier").toModule(), m->head);

    torch::NoGradGuard no_grad;
    const lt_model_params &p = m->params;
    torch::Tensor x = torch::empty({2, p.channels, p.height, p.width});
    float *v = x.data_ptr<float>();
    uint64_t state = 12345;
    for (int64_t i = 0; i < x.numel(); i++)
        v[i] = static_cast<float>((splitmix64(&state) >> 11) * (4.0 / 9007199254740992.0) - 2.0);
    torch::Tensor ref = logits_of(m, x);
    double scale = std::max(1.0, ref.abs().max().item<double>()), diff = 0;
    for (int native = 1; native >= 0; native--) {
        m->native = native;
        try {
            torch::Tensor got = run_plan(m, x, false);
            if (got.sizes() != ref.sizes()) {
                m->split_why = "head(features(x)) has shape " + c10::str(got.sizes()) + ", the model's output " +
                               c10::str(ref.sizes());
                continue;
            }
            diff = (got - ref).abs().max().item<double>();
            if (diff <= 1e-4 * scale) {
                m->splits = true;
                m->split_why.clear();
                prepare_tape(m);
                return;
            }
            char buf[160];
            std::snprintf(buf, sizeof buf, "head(features(x)) differs from the model's output by %.3g on a probe",
                          diff);
            m->split_why = buf;
        } catch (const std::exception &e) {
            m->split_why = "head(features(x)) fails: " + short_message(e.what());
        }
    }
    m->native = false;
}

int check_n(int n, char *err, size_t err_len)
{
    if (n < 1 || n > kMaxBatch) {
        set_err(err, err_len, "batch size %d not in [1, %d]", n, kMaxBatch);
        return LT_EINVAL;
    }
    return LT_OK;
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
        build_plan(m.get());
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
    if (check_n(n, err, err_len) != LT_OK)
        return LT_EINVAL;
    return guarded("lt_forward", err, err_len, [&]() {
        torch::NoGradGuard no_grad;
        torch::Tensor out = logits_of(model, input_tensor(model, input, n));
        copy_out(out, logits, static_cast<size_t>(n) * model->n_classes);
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

/* ==== Explanations ==== */

extern "C" int lt_model_splits(const lt_model *model, char *why, size_t why_len)
{
    if (model == nullptr) {
        set_err(why, why_len, "no model");
        return 0;
    }
    if (!model->splits)
        set_err(why, why_len, "%s", model->split_why.c_str());
    return model->splits ? 1 : 0;
}

extern "C" int lt_cam_default_layer(const lt_model *model)
{
    if (model == nullptr)
        return -1;
    int last_conv = -1, n = static_cast<int>(model->info.size());
    for (int i = 0; i < n; i++)
        if (model->info[i].is_conv)
            last_conv = i;
    if (last_conv < 0)
        return -1;
    for (int i = last_conv + 1; i < n; i++)
        if (std::strcmp(model->info[i].type, "relu") == 0)
            return i;
    return last_conv;
}

extern "C" int lt_explain_pass(lt_model *model, const float *input, int n, int target, int guided, float *grad,
                               float *logits, int *targets, char *err, size_t err_len)
{
    if (model == nullptr || input == nullptr) {
        set_err(err, err_len, "lt_explain_pass: NULL argument");
        return LT_EINVAL;
    }
    if (check_n(n, err, err_len) != LT_OK)
        return LT_EINVAL;
    if (target >= model->n_classes) {
        set_err(err, err_len, "target class %d does not exist (valid: 0..%d)", target, model->n_classes - 1);
        return LT_EINVAL;
    }
    if (guided && !model->splits) {
        set_err(err, err_len, "guided backprop needs the model split at its layers: %s", model->split_why.c_str());
        return LT_EINVAL;
    }
    return guarded("lt_explain_pass", err, err_len, [&]() {
        torch::Tensor x = input_tensor(model, input, n);
        torch::Tensor out, g;
        std::vector<tape_entry> feat_tape, head_tape;
        bool taped = grad != nullptr && model->taped;
        if (grad == nullptr || taped) {
            torch::NoGradGuard no_grad;
            if (taped)
                out = tape_forward(model->head, tape_forward(model->feat, x, 0, model->feat.size() - 1, feat_tape),
                                   0, model->head.size() - 1, head_tape);
            else
                out = model->splits ? run_plan(model, x, false) : logits_of(model, x);
        } else {
            torch::AutoGradMode grad_mode(true);
            x.requires_grad_(true);
            out = model->splits ? run_plan(model, x, guided != 0) : logits_of(model, x);
        }
        if (out.dim() != 2 || out.size(0) != n || out.size(1) != model->n_classes)
            throw std::runtime_error("the model answered shape " + c10::str(out.sizes()));
        torch::Tensor t = target >= 0 ? torch::full({n}, static_cast<int64_t>(target), torch::kLong)
                                      : out.detach().argmax(1);
        if (taped) {
            torch::NoGradGuard no_grad;
            g = tape_backward(feat_tape, tape_grad(head_tape, out, t, guided != 0), guided != 0);
        } else if (grad != nullptr) {
            torch::Tensor score = out.gather(1, t.view({n, 1})).sum();
            g = torch::autograd::grad({score}, {x})[0];
        }
        if (grad != nullptr)
            copy_out(g, grad, static_cast<size_t>(n) * static_cast<size_t>(image_numel(model->params)));
        if (logits != nullptr)
            copy_out(out, logits, static_cast<size_t>(n) * model->n_classes);
        if (targets != nullptr)
            for (int i = 0; i < n; i++)
                targets[i] = static_cast<int>(t[i].item<int64_t>());
        return LT_OK;
    });
}

extern "C" int lt_gradcam(lt_model *model, const float *input, int layer, int target, float *layer_map,
                          size_t layer_map_len, float *cam, float *logits, int *target_out, char *err,
                          size_t err_len)
{
    if (model == nullptr || input == nullptr || layer_map == nullptr || cam == nullptr) {
        set_err(err, err_len, "lt_gradcam: NULL argument");
        return LT_EINVAL;
    }
    lt_layer_info li;
    int rc = lt_layer_get_info(model, layer, &li, err, err_len);
    if (rc != LT_OK)
        return rc;
    if (target >= model->n_classes) {
        set_err(err, err_len, "target class %d does not exist (valid: 0..%d)", target, model->n_classes - 1);
        return LT_EINVAL;
    }
    if (!model->splits) {
        set_err(err, err_len, "Grad-CAM needs the model split at a layer: %s", model->split_why.c_str());
        return LT_EINVAL;
    }
    size_t need = static_cast<size_t>(li.height) * li.width;
    if (layer_map_len < need) {
        set_err(err, err_len, "layer map buffer holds %zu floats, layer %d needs %zu", layer_map_len, layer, need);
        return LT_EINVAL;
    }
    return guarded("lt_gradcam", err, err_len, [&]() {
        const lt_model_params &p = model->params;
        torch::Tensor a;
        {
            torch::NoGradGuard no_grad;
            a = run_steps(model, model->feat, input_tensor(model, input, 1), 0, static_cast<size_t>(layer), false);
        }
        torch::Tensor out, da;
        int t = target;
        if (model->taped) {
            torch::NoGradGuard no_grad;
            std::vector<tape_entry> feat_tape, head_tape;
            out = tape_forward(model->head,
                               tape_forward(model->feat, a, static_cast<size_t>(layer) + 1, model->feat.size() - 1,
                                            feat_tape),
                               0, model->head.size() - 1, head_tape);
            if (t < 0)
                t = static_cast<int>(out.argmax(1)[0].item<int64_t>());
            da = tape_backward(feat_tape, tape_grad(head_tape, out, torch::full({1}, t, torch::kLong), false), false);
        } else {
            torch::AutoGradMode grad_mode(true);
            a = a.detach().requires_grad_(true);
            torch::Tensor y = run_steps(model, model->feat, a, static_cast<size_t>(layer) + 1,
                                        model->feat.size() - 1, false);
            out = run_head(model, y, false);
            if (t < 0)
                t = static_cast<int>(out.detach().argmax(1)[0].item<int64_t>());
            da = torch::autograd::grad({out.select(1, t).sum()}, {a})[0];
        }
        torch::NoGradGuard no_grad;
        torch::Tensor w = da.mean({2, 3}, true);
        torch::Tensor lm = torch::relu((w * a.detach()).sum(1, true));
        torch::Tensor up = torch::upsample_bilinear2d(lm, {p.height, p.width}, false);
        copy_out(lm, layer_map, need);
        copy_out(up, cam, static_cast<size_t>(p.height) * p.width);
        if (logits != nullptr)
            copy_out(out, logits, static_cast<size_t>(model->n_classes));
        if (target_out != nullptr)
            *target_out = t;
        return LT_OK;
    });
}
