"""Integration tests of the explanation methods (issue 12): POST /v1/models/{m}/explain,
GET|POST /v1/models/{m}/classes/{c}/visualize and `loupe explain|visualize --class`.

Every method has a reference implementation here, in plain PyTorch, written from the issue's
definitions (Captum is not available): on the same model.ts for the CNNs (run module by module,
so guided backprop swaps a custom autograd function in for each ReLU, no hooks), and from the
safetensors weights, in float64, for the MLPs. The daemon's JSON answer must match it:
max |a - r| <= 1e-4 * max |r| for every deterministic method.

The store, made by --make-store (about a minute): a VGG16-BN at width 1/16 trained by the real
trainer (`vgg`), a VGG11-BN with torchvision's head (ReLUs in it) on three channels with ImageNet
mean/std (`crop`), an MLP trained by `loupe train-mlp` (`mlp`, relu 784-64-32-10, its first layer
rewritten to take input mean 0.286 and std 0.353, so the black baseline is not the zero tensor),
two MLPs with random weights (`sig` sigmoid 784-32-10, `tanh` 784-16-10), and two small scripted
CNNs: `noavg` (no avgpool: head = classifier(y)) and `unsplit` (its output is not
head(features(x)): Grad-CAM must be refused).

    LOUPE_BIN=build/cli/loupe LOUPE_EXPLAIN_STORE=/tmp/explain-store /usr/bin/python3 test_explain.py --make-store
    LOUPE_BIN=... LOUPE_EXPLAIN_STORE=/tmp/explain-store /usr/bin/python3 test_explain.py Mlp Cnn ...

LOUPE_QUICK=1 (the sanitizer builds) uses fewer images.
"""
import base64
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.parse

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loupe_fixture as fx  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "training"))
import safetensors_np  # noqa: E402

LOUPE = os.environ.get("LOUPE_BIN", "build/cli/loupe")
STORE = os.environ.get("LOUPE_EXPLAIN_STORE", "/tmp/loupe-explain-store")
QUICK = os.environ.get("LOUPE_QUICK", "0") == "1"
IMAGES, LABELS = fx.test_set()

METHODS = ("gradient", "input_x_gradient", "smoothgrad", "integrated_gradients", "guided_backprop", "gradcam",
           "guided_gradcam", "occlusion")
TOL = 1e-4  # the issue's: max |a - r| <= TOL * max |r|
STAT_IMAGES = 10 if QUICK else 50  # the issue's statistics are over 50 test images
DET_IMAGES = (0, 1) if QUICK else (0, 1, 2)  # images of the deterministic comparisons


def png(i):
    return fx.png_gray(IMAGES[i])


def decode_png(data):
    from PIL import Image
    return Image.open(io.BytesIO(data))


# ==== The store ====

def write_mlp(folder, sizes, activation, seed):
    """An MLP with random weights (He-scaled normal, small random biases), input normalised with
    Fashion-MNIST's mean and std."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    tensors = []
    for i in range(len(sizes) - 1):
        w = rng.standard_normal((sizes[i + 1], sizes[i])) * math.sqrt(2.0 / sizes[i])
        tensors.append(("layers.%d.weight" % i, w.astype(np.float32)))
        tensors.append(("layers.%d.bias" % i, (0.1 * rng.standard_normal(sizes[i + 1])).astype(np.float32)))
    fx.write_safetensors(os.path.join(folder, "weights.safetensors"), tensors, activation)
    manifest = {"name": os.path.basename(folder), "kind": "mlp", "classes": fx.CLASSES,
                "input": {"channels": 1, "height": 28, "width": 28, "mean": [0.286], "std": [0.353],
                          "resize": "area", "invert": "auto"},
                "mlp": {"activation": activation, "sizes": sizes}, "layers": [], "training": {}}
    with open(os.path.join(folder, "model.json"), "w") as f:
        json.dump(manifest, f)


def write_small_cnn(folder, split):
    """A scripted CNN on 28x28 without avgpool: features (conv relu pool conv relu pool) and a
    classifier (flatten linear relu linear). split=False adds 1 to every logit, so the output is
    not classifier(features(x))."""
    import torch
    from torch import nn

    class Small(nn.Module):
        def __init__(self, offset: float):
            super().__init__()
            self.offset = offset
            self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                          nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(6 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 10))

        def forward(self, x):
            return self.classifier(self.features(x)) + self.offset

    torch.manual_seed(3 if split else 4)
    m = Small(0.0 if split else 1.0).eval()
    os.makedirs(folder, exist_ok=True)
    torch.jit.script(m).save(os.path.join(folder, "model.ts"))
    layers, ch = [], None
    for i, mod in enumerate(m.features):
        if isinstance(mod, nn.Conv2d):
            ch = mod.out_channels
        layers.append({"index": i, "name": "features.%d" % i, "type": type(mod).__name__.lower(), "channels": ch})
    with open(os.path.join(folder, "model.json"), "w") as f:
        json.dump({"name": os.path.basename(folder), "kind": "torchscript", "classes": fx.CLASSES,
                   "input": {"channels": 1, "height": 28, "width": 28, "mean": [0.5], "std": [0.25],
                             "resize": "pad"}, "layers": layers}, f)


def write_trained_mlp(folder, loupe, tmp):
    """A relu MLP 784-64-32-10 trained for two epochs by `loupe train-mlp` (which normalises with
    mean 0, std 1), rewritten for input mean 0.286 and std 0.353: the first layer absorbs the
    normalisation (W' = W * std, b' = b + W @ mean), so the function of the pixels is the trained
    one and the black baseline is not the zero tensor."""
    raw = os.path.join(tmp, "mlp-raw")
    subprocess.run([loupe, "train-mlp", "--epochs", "2", "--hidden", "64,32", "--seed", "1", "--out", raw],
                   check=True, stdout=subprocess.DEVNULL)
    t = safetensors_np.load(os.path.join(raw, "weights.safetensors"))
    with open(os.path.join(raw, "model.json")) as f:
        manifest = json.load(f)
    fx.require(manifest["input"]["mean"] == [0.0] and manifest["input"]["std"] == [1.0], manifest["input"])
    mean, std = 0.286, 0.353
    w0 = t["layers.0.weight"].astype(np.float64)
    t["layers.0.bias"] = (t["layers.0.bias"] + w0.sum(1) * mean).astype(np.float32)
    t["layers.0.weight"] = (w0 * std).astype(np.float32)
    os.makedirs(folder)
    names = sorted(t, key=lambda k: (int(k.split(".")[1]), k))
    fx.write_safetensors(os.path.join(folder, "weights.safetensors"), [(k, t[k]) for k in names], "relu")
    manifest["name"] = os.path.basename(folder)
    manifest["input"]["mean"], manifest["input"]["std"] = [mean], [std]
    with open(os.path.join(folder, "model.json"), "w") as f:
        json.dump(manifest, f)


def make_store(root):
    """vgg: VGG16-BN at width 1/16 on 32x32 (pad), trained for two epochs on 8192 images (about
    75% test accuracy: trained enough that its logits spread); crop: VGG11-BN with torchvision's
    head (ReLUs in it) and the seed recipe's three-channel preprocessing at crop 32; mlp: a trained
    relu MLP; sig, tanh: MLPs with random weights; noavg, unsplit: small scripted CNNs."""
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    tmp = tempfile.mkdtemp(prefix="loupe-explain-store-")
    common = ["--width", "0.0625", "--val-subset", "128", "--test-subset", "128", "--threads", "1", "--quiet"]
    train = [sys.executable, os.path.join(ROOT, "training", "train_vgg.py")]
    subprocess.run(train + ["--epochs", "2", "--train-subset", "8192", "--out", os.path.join(root, "vgg")] + common,
                   check=True)
    subprocess.run(train + ["--depth", "11", "--head", "imagenet", "--input-size", "32", "--epochs", "1",
                            "--train-subset", "1024", "--out", os.path.join(root, "crop")] + common, check=True)
    for name in ("vgg", "crop"):  # the checkpoint is not needed here
        os.remove(os.path.join(root, name, "checkpoint.pt"))
    write_trained_mlp(os.path.join(root, "mlp"), LOUPE, tmp)
    write_mlp(os.path.join(root, "sig"), [784, 32, 10], "sigmoid", 2)
    write_mlp(os.path.join(root, "tanh"), [784, 16, 10], "tanh", 3)
    write_small_cnn(os.path.join(root, "noavg"), True)
    write_small_cnn(os.path.join(root, "unsplit"), False)
    shutil.rmtree(tmp)


# ==== Reference implementations in PyTorch ====

def _guided_relu():
    import torch

    class GuidedReLU(torch.autograd.Function):
        """ReLU whose backward pass lets through only positive gradients where its input was
        positive (Springenberg et al. 2015)."""

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp(min=0)

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return g * ((x > 0) & (g > 0)).to(g.dtype)

    return GuidedReLU


_refs = {}


def ref(name):
    if name not in _refs:
        _refs[name] = Ref(name)
    return _refs[name]


class Ref:
    """A served model in PyTorch: the CNNs from their model.ts run module by module (float32, as
    the daemon's libtorch runs them); the MLPs from their safetensors weights in float64."""

    def __init__(self, name):
        import torch
        torch.set_num_threads(1)
        self.name = name
        with open(os.path.join(STORE, name, "model.json")) as f:
            self.manifest = json.load(f)
        inp = self.manifest["input"]
        self.input = inp
        self.c, self.h, self.w = inp["channels"], inp["height"], inp["width"]
        self.kind = self.manifest["kind"]
        self.classes = self.manifest["classes"]
        self.mean = torch.tensor(inp["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(inp["std"], dtype=torch.float32).view(1, -1, 1, 1)
        self.guided = _guided_relu()
        if self.kind == "mlp":
            self.dtype = torch.float64
            t = safetensors_np.load(os.path.join(STORE, name, "weights.safetensors"))
            n = len(self.manifest["mlp"]["sizes"]) - 1
            self.weights = [(torch.from_numpy(t["layers.%d.weight" % i]).double(),
                             torch.from_numpy(t["layers.%d.bias" % i]).double()) for i in range(n)]
            self.activation = self.manifest["mlp"]["activation"]
        else:
            self.dtype = torch.float32
            self.ts = torch.jit.load(os.path.join(STORE, name, "model.ts"))
            self.ts.eval()
            self.features = list(self.ts.features.children())
            self.avgpool = self.ts.avgpool if hasattr(self.ts, "avgpool") else None
            self.head = list(self.ts.classifier.children())
            types = [m.original_name for m in self.features]
            last_conv = max(i for i, t in enumerate(types) if t == "Conv2d")
            self.default_layer = next(i for i in range(last_conv + 1, len(types)) if types[i] == "ReLU")
            self.types = types

    def preprocess(self, img):
        """The documented preprocessing of a [28,28] uint8 image, as [1,C,H,W] (float32 arithmetic,
        then the reference's dtype)."""
        import torch
        import torch.nn.functional as F
        x = torch.from_numpy(img.astype(np.float32) / np.float32(255.0))[None, None]
        if self.kind == "mlp":
            pass  # 28x28 area-averaged to 28x28: as it is
        elif self.input["resize"] == "pad":
            p = self.h - 28
            x = F.pad(x, (p // 2, p - p // 2, p // 2, p - p // 2))
        else:
            r, s = self.input["resize_to"], self.h
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
            o = (r - s) // 2
            x = x[:, :, o:o + s, o:o + s]
        x = x.expand(-1, self.c, -1, -1)
        return ((x - self.mean) / self.std).contiguous().to(self.dtype)

    def black(self):
        """x0: the preprocessing of an all-zero image."""
        import torch
        return ((torch.zeros(1, self.c, self.h, self.w) - self.mean) / self.std).to(self.dtype)

    def _relu(self, x, guided):
        return self.guided.apply(x) if guided else x.clamp(min=0)

    def logits(self, x, guided=False):
        if self.kind == "mlp":
            h = x.reshape(x.shape[0], -1)
            for i, (w, b) in enumerate(self.weights):
                h = h @ w.T + b
                if i < len(self.weights) - 1:
                    h = {"relu": lambda v: self._relu(v, guided), "sigmoid": lambda v: v.sigmoid(),
                         "tanh": lambda v: v.tanh(), "linear": lambda v: v}[self.activation](h)
            return h
        return self.head_from(self.features_to(x, len(self.features) - 1, guided), len(self.features) - 1, guided)

    def _run(self, mods, x, guided):
        for m in mods:
            x = self.guided.apply(x) if guided and m.original_name == "ReLU" else m(x)
        return x

    def features_to(self, x, layer, guided=False):
        """The output of features[layer]."""
        return self._run(self.features[:layer + 1], x, guided)

    def head_from(self, a, layer, guided=False):
        """The logits from the output of features[layer]."""
        import torch
        y = self._run(self.features[layer + 1:], a, guided)
        if self.avgpool is not None:
            y = torch.flatten(self.avgpool(y), 1)
        return self._run(self.head, y, guided)

    def scores(self, xs, t):
        import torch
        with torch.no_grad():
            return self.logits(xs)[:, t]

    def grads(self, xs, t, guided=False, batch=64):
        """d score_t / d x for each row of xs [N,C,H,W] (in batches)."""
        import torch
        out = []
        for i in range(0, xs.shape[0], batch):
            x = xs[i:i + batch].detach().clone().requires_grad_(True)
            self.logits(x, guided)[:, t].sum().backward()
            out.append(x.grad.detach())
        return torch.cat(out)

    # ---- the methods, as the issue defines them; each returns a dict with "attribution" [C|1,H,W] ----

    def gradient(self, x, t):
        return {"attribution": self.grads(x, t)[0]}

    def input_x_gradient(self, x, t):
        return {"attribution": x[0] * self.grads(x, t)[0]}

    def smoothgrad(self, x, t, samples=25, noise=0.15, seed=0):
        import torch
        g = torch.Generator().manual_seed(seed)
        s = noise * float(x.max() - x.min())
        e = torch.randn((samples,) + tuple(x.shape[1:]), generator=g, dtype=torch.float64).to(self.dtype) * s
        return {"attribution": self.grads(x + e, t).mean(0)}

    def integrated_gradients(self, x, t, steps=32, baseline="black"):
        import torch
        x0 = self.black() if baseline == "black" else torch.zeros_like(x)
        alphas = ((torch.arange(steps, dtype=torch.float64) + 0.5) / steps).to(self.dtype).view(-1, 1, 1, 1)
        pts = x0 + alphas * (x - x0)
        attr = (x - x0)[0] * self.grads(pts, t).mean(0)
        sx, s0 = float(self.scores(x, t)[0]), float(self.scores(x0, t)[0])
        return {"attribution": attr, "convergence_delta": float(attr.double().sum()) - (sx - s0),
                "baseline_score": s0, "score": sx}

    def guided_backprop(self, x, t):
        return {"attribution": self.grads(x, t, guided=True)[0]}

    def gradcam(self, x, t, layer=None):
        import torch
        import torch.nn.functional as F
        layer = self.default_layer if layer is None else layer
        with torch.no_grad():
            a = self.features_to(x, layer)
        a = a.detach().clone().requires_grad_(True)
        self.head_from(a, layer)[0, t].backward()
        w = a.grad.mean(dim=(2, 3), keepdim=True)  # [1,k,1,1]
        cam = (w * a.detach()).sum(1, keepdim=True).clamp(min=0)  # [1,1,h,w]
        up = F.interpolate(cam, size=(self.h, self.w), mode="bilinear", align_corners=False)
        return {"attribution": up[0], "layer_map": cam[0, 0], "layer": layer, "shape": tuple(a.shape[1:])}

    def guided_gradcam(self, x, t, layer=None):
        cam = self.gradcam(x, t, layer)
        gb = self.guided_backprop(x, t)["attribution"]
        return {"attribution": gb * cam["attribution"][0], "layer_map": cam["layer_map"], "layer": cam["layer"],
                "shape": cam["shape"]}

    def occlusion(self, x, t, window=4, stride=2):
        import torch
        x0 = self.black()
        ys, xs = occlusion_positions(self.h, window, stride), occlusion_positions(self.w, window, stride)
        boxes = [(y, xx) for y in ys for xx in xs]
        batch = x.repeat(len(boxes), 1, 1, 1)
        for k, (y, xx) in enumerate(boxes):
            batch[k, :, y:y + window, xx:xx + window] = x0[0, :, y:y + window, xx:xx + window]
        base = float(self.scores(x, t)[0])
        occ = torch.cat([self.scores(batch[i:i + 64], t) for i in range(0, len(boxes), 64)]).double()
        total = np.zeros((self.h, self.w))
        count = np.zeros((self.h, self.w))
        for k, (y, xx) in enumerate(boxes):
            total[y:y + window, xx:xx + window] += base - float(occ[k])
            count[y:y + window, xx:xx + window] += 1
        plane = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        return {"attribution": torch.from_numpy(np.repeat(plane[None], self.c, 0))}

    def explain(self, img, method, t, **params):
        x = self.preprocess(img)
        r = getattr(self, method)(x, t, **params)
        r["attribution"] = r["attribution"].detach().double().numpy()
        if "layer_map" in r:
            r["layer_map"] = r["layer_map"].detach().double().numpy()
        return r


def occlusion_positions(n, window, stride):
    """Window origins along a side of n: 0, s, 2s, ... and one flush with the far edge when the
    last does not reach it."""
    p = list(range(0, n - window + 1, stride))
    if p[-1] + window < n:
        p.append(n - window)
    return p


def p99_map(attr):
    """|attr| summed over channels, divided by its 99th percentile (numpy's linear interpolation;
    the maximum when that is 0), clipped at 1: saliency's normalisation. Returns (map, top)."""
    g = np.abs(np.asarray(attr, np.float64)).sum(0)
    top = np.percentile(g, 99)
    if not top > 0:
        top = g.max()
    if not top > 0:
        return np.zeros_like(g), 0.0
    return np.minimum(g / top, 1.0), top


def rank(a):
    """Ranks 0..n-1 of a flat array, ties given their mean rank (numpy only: scipy may be absent)."""
    a = np.asarray(a, np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    first = np.r_[True, s[1:] != s[:-1]]
    group = np.cumsum(first) - 1
    starts = np.r_[np.nonzero(first)[0], len(a)]
    out = np.empty(len(a))
    out[order] = 0.5 * (starts[group] + starts[group + 1] - 1)
    return out


def spearman(a, b):
    ra, rb = rank(a), rank(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def random_start(r, seed):
    """The seeded start image of the class visualisation's GET (loupe_fixture.random_start), as
    [1,C,H,W] in the reference's dtype."""
    import torch
    return torch.from_numpy(fx.random_start(r.input, seed)).to(r.dtype)


def class_viz(r, x0, c, iterations, lr, l2):
    """Class model visualisation as the contract says, in PyTorch: Adam (weight decay 1e-6) on the
    normalised image, minimising -score_c(x) + l2 * sum(x^2). Returns (the class logit before the
    first step and after each, iterations+1 values; the image after each step de-normalised and
    clipped to [0,1], [C,H,W])."""
    import torch
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr, weight_decay=1e-6)
    trace, pixels = [], []
    for _ in range(iterations):
        s = r.logits(x)[0, c]
        loss = -s + l2 * (x * x).sum()
        trace.append(s.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
        pixels.append((x.detach().float() * r.std + r.mean).clamp(0, 1)[0].numpy())
    trace.append(float(r.scores(x.detach(), c)[0]))
    return np.array(trace), pixels


# ==== Tests ====

class Served(unittest.TestCase):
    args = ("--threads", "2", "--drain-grace", "0", "--max-body", "1M")

    @classmethod
    def setUpClass(cls):
        cls.d = fx.Daemon(LOUPE, STORE, *cls.args)

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        fx.require(rc == 0, "loupe serve exited %d\n%s" % (rc, cls.d.read_log()))

    def post(self, path, body, ctype="image/png"):
        return self.d.request("POST", path, body, {"Content-Type": ctype})

    def explain_raw(self, model, img, **q):
        qs = urllib.parse.urlencode(q)
        return self.d.json("POST", "/v1/models/%s/explain?%s" % (model, qs), png(img), {"Content-Type": "image/png"})

    def explain(self, model, img, **q):
        """The JSON answer of explain for test image img; asserts 200."""
        st, _, b = self.explain_raw(model, img, format="json", **q)
        self.assertEqual(st, 200, b)
        return b

    def assert_error(self, st, body, status, code=None):
        self.assertEqual(st, status, body)
        self.assertIsInstance(body.get("error"), dict, body)
        self.assertTrue(body["error"].get("message"), body)
        if code:
            self.assertEqual(body["error"]["code"], code, body)

    def assert_close(self, got, want, what):
        """The issue's criterion: max |a - r| <= 1e-4 * max |r| (and the same shape)."""
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        self.assertEqual(got.shape, want.shape, what)
        err, top = float(np.abs(got - want).max()), float(np.abs(want).max())
        # An all-zero reference (Grad-CAM of a class the layer does not support) wants exact zeros.
        self.assertLessEqual(err, TOL * top, "%s: max|a-r| = %.3g, max|r| = %.3g (ratio %.3g)"
                             % (what, err, top, err / top if top else math.inf))

    def check_answer(self, model, img, method, target=None, **params):
        """One explain request against the reference: attribution, map, score, target, params and
        the method's extra fields."""
        r = ref(model)
        q = dict(params, method=method)
        if target is not None:
            q["target"] = target
        b = self.explain(model, img, **q)
        x = r.preprocess(IMAGES[img])
        logits = r.logits(x).detach().double().numpy()[0]
        pred = int(np.argmax(logits))
        t = pred if target is None else target
        what = "%s %s image %d target %d %s" % (model, method, img, t, params)
        self.assertEqual((b["model"], b["method"]), (model, method), what)
        self.assertEqual(b["target"], {"index": t, "class": r.classes[t]}, what)
        self.assertEqual(b["prediction"]["index"], pred, what)
        self.assertEqual(b["prediction"]["class"], r.classes[pred], what)
        p = np.exp(logits - logits.max())
        self.assertAlmostEqual(b["prediction"]["probability"], p[pred] / p.sum(), places=5, msg=what)
        self.assertAlmostEqual(b["score"], logits[t], delta=1e-5 * max(1.0, abs(logits[t])), msg=what)
        self.assertEqual((b["channels"], b["height"], b["width"]), (r.c, r.h, r.w), what)
        self.assertIs(b["inverted"], False, what)
        kw = {k: v for k, v in params.items() if k not in ("format", "scale", "overlay", "invert")}
        want = r.explain(IMAGES[img], method, t, **kw)
        a = np.array(b["attribution"], np.float64)
        self.assertEqual(a.shape, (1 if method == "gradcam" else r.c, r.h, r.w), what)
        self.assert_close(a, want["attribution"], what + " attribution")
        m = np.array(b["map"], np.float64)
        self.assertEqual(m.shape, (r.h, r.w), what)
        self.assertTrue(((m >= 0) & (m <= 1)).all(), what)
        own, top = p99_map(a)
        np.testing.assert_allclose(m, own, atol=1e-5, err_msg=what + " map (from its own attribution)")
        self.assertAlmostEqual(b["map_top"], top, delta=1e-5 * top, msg=what)
        _, ref_top = p99_map(want["attribution"])
        self.assertAlmostEqual(b["map_top"], ref_top, delta=1e-3 * ref_top, msg=what + " map_top vs reference")
        if method == "integrated_gradients":
            scale = max(abs(want["score"] - want["baseline_score"]), float(np.abs(want["attribution"]).sum()))
            self.assertAlmostEqual(b["baseline_score"], want["baseline_score"],
                                   delta=1e-5 * max(1.0, abs(want["baseline_score"])), msg=what)
            self.assertAlmostEqual(b["convergence_delta"], want["convergence_delta"], delta=TOL * scale,
                                   msg=what + " convergence_delta")
            self.assertAlmostEqual(b["convergence_delta"],
                                   float(a.sum()) - (b["score"] - b["baseline_score"]), delta=1e-5 * scale, msg=what)
        else:
            self.assertNotIn("convergence_delta", b, what)
        if method in ("gradcam", "guided_gradcam"):
            k, h, w = want["shape"]
            self.assertEqual(b["layer"]["index"], want["layer"], what)
            self.assertEqual((b["layer"]["channels"], b["layer"]["height"], b["layer"]["width"]), (k, h, w), what)
            self.assertEqual(b["layer"]["type"], r.types[want["layer"]].lower(), what)
            self.assertEqual(np.array(b["layer_map"]).shape, (h, w), what)
            self.assert_close(b["layer_map"], want["layer_map"], what + " layer_map")
        else:
            self.assertNotIn("layer_map", b, what)
        return b

    def check_methods(self, model, methods, images=DET_IMAGES):
        """Every method of methods on images, for the predicted class (the default) and the runner-up."""
        for img in images:
            order = np.argsort(ref(model).logits(ref(model).preprocess(IMAGES[img])).detach().numpy()[0])
            for t in (None, int(order[-2])):
                for method, params in methods:
                    with self.subTest(model=model, image=img, target=t, method=method, params=params):
                        self.check_answer(model, img, method, t, **params)


DETERMINISTIC = [("gradient", {}), ("input_x_gradient", {}), ("guided_backprop", {}),
                 ("integrated_gradients", {}), ("integrated_gradients", {"baseline": "zero", "steps": 7}),
                 ("smoothgrad", {"noise": 0, "samples": 3}),  # no noise: the mean of identical gradients
                 ("occlusion", {}), ("occlusion", {"window": 5, "stride": 4}),  # a window flush with the far edge
                 ("occlusion", {"window": 3, "stride": 5})]  # gaps: pixels no window covers are 0
CNN_ONLY = [("gradcam", {}), ("guided_gradcam", {})]


class Mlp(Served):
    """Every method defined for an MLP, against the float64 reference from its weights."""

    def test_relu_mlp(self):
        self.check_methods("mlp", DETERMINISTIC)

    def test_sigmoid_and_tanh(self):
        methods = [m for m in DETERMINISTIC if m[0] != "guided_backprop"]
        self.check_methods("sig", methods, images=DET_IMAGES[:1])
        self.check_methods("tanh", [("gradient", {}), ("integrated_gradients", {})], images=DET_IMAGES[:1])

    def test_params_and_defaults(self):
        want = {"gradient": {}, "input_x_gradient": {}, "guided_backprop": {},
                "smoothgrad": {"samples": 25, "noise": 0.15, "seed": 0},
                "integrated_gradients": {"steps": 32, "baseline": "black"},
                "occlusion": {"window": 4, "stride": 2}}
        for method, params in want.items():
            b = self.explain("mlp", 0, method=method)
            self.assertEqual(sorted(b["params"]), sorted(params), method)
            for k, v in params.items():
                if isinstance(v, float):
                    self.assertAlmostEqual(b["params"][k], v, places=6)
                else:
                    self.assertEqual(b["params"][k], v, (method, k))
        # The largest seed, 2^63-1, is echoed exactly (a JSON integer); 2^63 is past the range.
        b = self.explain("mlp", 0, method="smoothgrad", samples=7, noise=0.5, seed=(1 << 63) - 1)
        self.assertEqual((b["params"]["samples"], b["params"]["seed"]), (7, (1 << 63) - 1))
        st, _, e = self.explain_raw("mlp", 0, method="smoothgrad", seed=1 << 63)
        self.assertEqual((st, e["error"]["code"]), (400, "bad_parameter"), e)
        self.assertIn("9223372036854775807", e["error"]["message"])
        self.assertAlmostEqual(b["params"]["noise"], 0.5, places=6)
        b = self.explain("mlp", 0, method="integrated_gradients", steps=5, baseline="zero")
        self.assertEqual(b["params"], {"steps": 5, "baseline": "zero"})
        b = self.explain("mlp", 0, method="occlusion", window=7, stride=3)
        self.assertEqual(b["params"], {"window": 7, "stride": 3})
        # The default method is gradient; a target by name is the class of that name.
        st, _, b = self.d.json("POST", "/v1/models/mlp/explain?format=json&target=Sneaker", png(0),
                               {"Content-Type": "image/png"})
        self.assertEqual((st, b["method"], b["target"]), (200, "gradient", {"index": 7, "class": "Sneaker"}), b)
        self.assertEqual(self.explain("mlp", 0, method="gradient", target=7)["attribution"], b["attribution"])

    def test_ignored_parameters(self):
        """A parameter the method does not take is ignored, even out of its range."""
        a = self.explain("mlp", 1, method="gradient")
        b = self.explain("mlp", 1, method="gradient", steps=0, samples=99999, window=0, layer=77)
        self.assertEqual(a["attribution"], b["attribution"])
        self.assertEqual(b["params"], {})


class Cnn(Served):
    """Every method on the VGG16-BN and the three-channel VGG11 (a head with ReLUs)."""

    def test_vgg16(self):
        self.check_methods("vgg", DETERMINISTIC + CNN_ONLY)

    def test_crop(self):
        self.check_methods("crop", DETERMINISTIC + CNN_ONLY, images=DET_IMAGES[:1])

    def test_reference_is_the_model(self):
        """The module-by-module reference computes what model.ts computes (a check of the test)."""
        import torch
        for name in ("vgg", "crop", "noavg"):
            r = ref(name)
            x = torch.cat([r.preprocess(IMAGES[i]) for i in range(4)])
            with torch.no_grad():
                np.testing.assert_allclose(r.logits(x).numpy(), r.ts(x).numpy(), rtol=0, atol=1e-5)

    def test_guided_differs(self):
        """Guided backprop is not the gradient on these models (else its check proves nothing)."""
        for name in ("vgg", "crop", "mlp"):
            r = ref(name)
            x = r.preprocess(IMAGES[0])
            t = int(np.argmax(r.logits(x).detach().numpy()[0]))
            g, gb = r.gradient(x, t)["attribution"], r.guided_backprop(x, t)["attribution"]
            self.assertGreater(float((g - gb).abs().max()), 0.1 * float(g.abs().max()), name)


class Gradcam(Served):
    """Grad-CAM's layers, the split rule, and the layer in the answer."""

    def test_default_layer(self):
        self.assertEqual(ref("vgg").default_layer, 42)
        b = self.explain("vgg", 0, method="gradcam")
        self.assertEqual(b["params"], {"layer": 42})
        self.assertEqual(b["layer"]["index"], 42)
        self.assertEqual(b["layer"]["type"], "relu")
        self.assertGreater(np.max(b["layer_map"]), 0)  # the predicted class has some support here
        b = self.explain("crop", 0, method="guided_gradcam")
        self.assertEqual(b["params"], {"layer": ref("crop").default_layer})

    def test_other_layers(self):
        for model, layers in (("vgg", (12, 29, 40, 43)), ("crop", (10,))):
            for layer in layers:
                for method in ("gradcam", "guided_gradcam"):
                    with self.subTest(model=model, layer=layer, method=method):
                        b = self.check_answer(model, 1, method, None, layer=layer)
                        self.assertEqual(b["params"], {"layer": layer})
        b = self.check_answer("vgg", 2, "gradcam", 4, layer=0)
        self.assertEqual((b["layer"]["type"], b["layer"]["height"]), ("conv2d", 32))

    def test_without_avgpool(self):
        """A CNN whose head is classifier(y): every method, Grad-CAM at its default layer (4) and at 5."""
        self.assertEqual(ref("noavg").default_layer, 4)
        self.check_methods("noavg", DETERMINISTIC + CNN_ONLY, images=DET_IMAGES[:1])
        self.check_answer("noavg", 1, "gradcam", 2, layer=5)

    def test_unsplit_refused(self):
        """A CNN whose output is not head(features(x)): 422 for Grad-CAM, the other methods served."""
        for method in ("gradcam", "guided_gradcam"):
            st, _, b = self.explain_raw("unsplit", 0, method=method, format="json")
            self.assert_error(st, b, 422, "unprocessable")
        for method in ("gradient", "input_x_gradient", "occlusion"):
            st, _, b = self.explain_raw("unsplit", 0, method=method, format="json")
            self.assertEqual(st, 200, b)


class SmoothGrad(Served):
    def test_seeded(self):
        """The same seed repeats bit for bit; another seed, or another noise, differs."""
        for model in ("mlp", "vgg"):
            a = self.explain(model, 0, method="smoothgrad", seed=5)
            b = self.explain(model, 0, method="smoothgrad", seed=5)
            self.assertEqual(a["attribution"], b["attribution"], model)
            self.assertEqual(a["map"], b["map"], model)
            c = self.explain(model, 0, method="smoothgrad", seed=6)
            diff = np.abs(np.array(c["attribution"]) - np.array(a["attribution"])).max()
            self.assertGreater(diff, 1e-3 * np.abs(np.array(a["attribution"])).max(), model)
            d = self.explain(model, 0, method="smoothgrad")
            self.assertEqual(d["params"]["seed"], 0)
            self.assertNotEqual(d["attribution"], a["attribution"], model)
            st, _, p1 = self.post("/v1/models/%s/explain?method=smoothgrad&seed=5" % model, png(0))
            st, _, p2 = self.post("/v1/models/%s/explain?method=smoothgrad&seed=5" % model, png(0))
            self.assertEqual((st, p1), (200, p2), model)

    def test_noise_level(self):
        """sigma = noise * (max - min of x): the noise=0.15 answer is farther from the gradient than
        the noise=0.01 one, and the mean of one draw differs from the gradient by about sigma's effect."""
        g = np.array(self.explain("mlp", 2, method="gradient")["attribution"])
        small = np.array(self.explain("mlp", 2, method="smoothgrad", noise=0.01, samples=64)["attribution"])
        big = np.array(self.explain("mlp", 2, method="smoothgrad", samples=64)["attribution"])
        self.assertLess(np.abs(small - g).max(), np.abs(big - g).max())

    def test_against_reference(self):
        """At 256 draws against the reference at 256 (its own generator), Spearman of |attribution|
        per image. The issue asks for a median over 50 images > 0.95; that holds for the reference
        against itself (another seed) on the MLP, not on the small VGG (about 0.87: Monte Carlo noise
        on pixels whose mean gradient is near zero). So: on every model the daemon's median is within
        0.02 of the reference-vs-reference median (its draws are as good as independent ones of the
        right sigma), and on the MLP it is > 0.95 as the issue says; the VGG's figure is printed."""
        n = STAT_IMAGES
        for model in ("mlp", "vgg"):
            r = ref(model)
            rho, control = [], []
            for i in range(n):
                b = self.explain(model, i, method="smoothgrad", samples=256)
                a = np.abs(np.array(b["attribution"]))
                x, t = r.preprocess(IMAGES[i]), b["target"]["index"]
                w1 = r.smoothgrad(x, t, samples=256, seed=1000 + i)["attribution"].abs().numpy()
                w2 = r.smoothgrad(x, t, samples=256, seed=5000 + i)["attribution"].abs().numpy()
                rho.append(spearman(a, w1))
                control.append(spearman(w2, w1))
            med, ctl = float(np.median(rho)), float(np.median(control))
            print("\nsmoothgrad %s samples=256: median Spearman of |attribution| vs the reference %.4f (min %.4f); "
                  "reference vs reference %.4f; %d images" % (model, med, min(rho), ctl, n))
            self.assertGreater(med, ctl - 0.02, (model, rho, control))
            if model == "mlp":
                self.assertGreater(med, 0.95, rho)


class IntegratedGradients(Served):
    def test_convergence(self):
        """At 64 steps, |convergence_delta| / |score(x) - score(x0)| per image. The issue asks for a
        median over 50 images under 1%: the MLP meets it (about 0.3% for the exact reference); the
        small VGG does not, even in the reference (about 3%: its score crosses many ReLU and max-pool
        kinks along the path), so there each image's delta must be the reference's and the median
        is printed. Every delta is sum(attribution) - (score - baseline_score)."""
        n = STAT_IMAGES
        for model in ("mlp", "vgg"):
            r = ref(model)
            ratios, ref_ratios = [], []
            for i in range(n):
                b = self.explain(model, i, method="integrated_gradients", steps=64)
                diff = b["score"] - b["baseline_score"]
                self.assertAlmostEqual(b["convergence_delta"], float(np.sum(b["attribution"])) - diff,
                                       delta=1e-5 * max(1.0, abs(diff)))
                ratios.append(abs(b["convergence_delta"]) / abs(diff))
                want = r.integrated_gradients(r.preprocess(IMAGES[i]), b["target"]["index"], steps=64)
                ref_ratios.append(abs(want["convergence_delta"]) / abs(want["score"] - want["baseline_score"]))
                self.assertAlmostEqual(b["convergence_delta"], want["convergence_delta"],
                                       delta=TOL * max(abs(diff), float(np.abs(want["attribution"]).sum())),
                                       msg=(model, i))
            med = float(np.median(ratios))
            print("\nintegrated_gradients %s steps=64: median |delta|/|score(x)-score(x0)| = %.5f (max %.5f; "
                  "reference %.5f) over %d images" % (model, med, max(ratios), float(np.median(ref_ratios)), n))
            if model == "mlp":
                self.assertLess(med, 0.01, ratios)

    def test_more_steps_converge(self):
        """Delta shrinks with more steps: over the first images, the median at 512 steps is under
        the median at 8 (on both models)."""
        for model in ("mlp", "vgg"):
            d = {k: np.median([abs(self.explain(model, i, method="integrated_gradients", steps=k)["convergence_delta"])
                               for i in range(5)]) for k in (8, 512)}
            self.assertLess(d[512], d[8], model)


class Errors(Served):
    """Each bad input its own case; the daemon serves on after each."""

    def tearDown(self):
        st, _, b = self.d.json("POST", "/v1/models/vgg/predict", png(0), {"Content-Type": "image/png"})
        self.assertEqual(st, 200, b)

    def bad(self, model, **q):
        st, _, b = self.explain_raw(model, 0, **q)
        self.assert_error(st, b, 400, "bad_parameter")
        return b["error"]["message"]

    def test_unknown_method(self):
        for m in ("lime", "", "Gradient", "gradcam2"):
            msg = self.bad("vgg", method=m)
            for name in METHODS:
                self.assertIn(name, msg, m)

    def test_each_parameter_past_its_range(self):
        cases = [("smoothgrad", "samples", ("0", "1025", "-1", "x", "2.5"), "1024"),
                 ("smoothgrad", "noise", ("-0.01", "10.5", "nan", "inf", "x"), "10"),
                 ("smoothgrad", "seed", ("-1", "18446744073709551616", "x"), None),
                 ("integrated_gradients", "steps", ("0", "1025", "x"), "1024"),
                 ("integrated_gradients", "baseline", ("white", "", "0"), "black"),
                 ("gradcam", "layer", ("-1", "44", "x"), "43"),
                 ("guided_gradcam", "layer", ("44",), "43"),
                 ("occlusion", "window", ("0", "33", "x"), "32"),
                 ("occlusion", "stride", ("0", "33", "x"), "32")]
        for method, param, values, words in cases:
            for v in values:
                with self.subTest(method=method, param=param, value=v):
                    msg = self.bad("vgg", method=method, **{param: v})
                    self.assertIn(param, msg)
                    if words:
                        self.assertIn(words, msg)
        # The MLP's ranges follow its size (28x28).
        for param in ("window", "stride"):
            self.assertIn("28", self.bad("mlp", method="occlusion", **{param: "29"}))

    def test_saliency_parameters(self):
        for q in ({"target": "10"}, {"target": "Nope"}, {"format": "gif"}, {"scale": "0"}, {"scale": "33"},
                  {"invert": "maybe"}, {"overlay": "2"}):
            with self.subTest(q=q):
                self.bad("vgg", method="gradient", **q)

    def test_gradcam_on_an_mlp(self):
        for method in ("gradcam", "guided_gradcam"):
            st, _, b = self.explain_raw("mlp", 0, method=method, format="json")
            self.assert_error(st, b, 422, "unprocessable")

    def test_guided_backprop_needs_relu(self):
        for model in ("sig", "tanh"):
            st, _, b = self.explain_raw(model, 0, method="guided_backprop", format="json")
            self.assert_error(st, b, 422, "unprocessable")
        st, _, b = self.explain_raw("sig", 0, method="gradient", format="json")
        self.assertEqual(st, 200, b)

    def test_unknown_model(self):
        for method in ("gradient", "gradcam", "occlusion"):
            st, _, b = self.explain_raw("nope", 0, method=method, format="json")
            self.assert_error(st, b, 404, "model_not_found")

    def test_no_body_and_bad_image(self):
        st, _, b = self.d.json("POST", "/v1/models/vgg/explain?method=occlusion", b"", {"Content-Type": "image/png"})
        self.assert_error(st, b, 400, "empty_body")
        st, _, b = self.d.json("POST", "/v1/models/vgg/explain?method=occlusion", png(0)[:60],
                               {"Content-Type": "image/png"})
        self.assert_error(st, b, 400, "bad_image")

    def test_get_not_allowed(self):
        st, h, b = self.d.json("GET", "/v1/models/vgg/explain")
        self.assert_error(st, b, 405, "method_not_allowed")

    def test_visualize_parameters(self):
        base = "/v1/models/vgg/classes/7/visualize?"
        for q in ("iterations=0", "iterations=201", "every=0", "iterations=4&every=5", "lr=0", "lr=10.5",
                  "lr=nan", "l2=-0.1", "l2=100.5", "l2=nan", "seed=-1", "scale=0", "scale=33", "format=gif"):
            with self.subTest(q=q):
                st, _, b = self.d.json("GET", base + q)
                self.assert_error(st, b, 400, "bad_parameter")

    def test_visualize_unknown_class_or_model(self):
        for c in ("10", "-1", "Nope", "Sneakers"):
            st, _, b = self.d.json("GET", "/v1/models/vgg/classes/%s/visualize?iterations=1&every=1" % c)
            self.assert_error(st, b, 404, "not_found")
            st, _, b = self.d.json("GET", "/v1/models/mlp/classes/%s/visualize?iterations=1&every=1" % c)
            self.assert_error(st, b, 404, "not_found")
        st, _, b = self.d.json("GET", "/v1/models/nope/classes/1/visualize")
        self.assert_error(st, b, 404, "model_not_found")


class Png(Served):
    def test_png_sizes(self):
        """PNG answers (the default format) are PNGs of the model's size times scale, for every method."""
        for model, size, methods in (("mlp", 28, [m for m in METHODS if "gradcam" not in m]),
                                     ("vgg", 32, METHODS)):
            for method in methods:
                for q, k in (({}, 1), ({"scale": 3}, 3), ({"scale": 2, "overlay": 1}, 2)):
                    with self.subTest(model=model, method=method, q=q):
                        qs = urllib.parse.urlencode(dict(q, method=method, samples=4, steps=4))
                        st, h, body = self.post("/v1/models/%s/explain?%s" % (model, qs), png(0))
                        self.assertEqual((st, h["content-type"]), (200, "image/png"), body[:200])
                        self.assertEqual(body[:8], b"\x89PNG\r\n\x1a\n")
                        self.assertEqual(decode_png(body).size, (size * k, size * k))

    def test_png_is_the_map(self):
        """The PNG is the heatmap of `map` as saliency draws it: gradient's PNG is saliency's, byte for
        byte; the overlay differs from the plain heatmap."""
        st, _, plain = self.post("/v1/models/vgg/explain?method=gradcam", png(0))
        st, _, over = self.post("/v1/models/vgg/explain?method=gradcam&overlay=1", png(0))
        self.assertNotEqual(plain, over)
        st, _, sal = self.post("/v1/models/vgg/saliency", png(0))
        st, _, grad = self.post("/v1/models/vgg/explain?method=gradient", png(0))
        self.assertEqual(sal, grad)  # gradient's map is saliency's


class Visualize(Served):
    """Class model visualisation against the PyTorch reference."""

    def check_viz(self, model, b, x0, c, rises=True):
        r = ref(model)
        self.assertEqual(b["class"], {"index": c, "class": r.classes[c]})
        want, pixels = class_viz(r, x0, c, b["iterations"], b["lr"], b["l2"])
        got = np.array(b["score"])
        self.assertEqual(got.shape, (b["iterations"] + 1,))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * max(1.0, np.abs(want).max()),
                                   err_msg="%s class %d score trace" % (model, c))
        if rises:  # on the trained models; a random one's class score can fall under the L2 penalty
            self.assertGreater(got[-1], got[0])
        for f in b["frames"]:
            rgb = np.asarray(decode_png(base64.b64decode(f["png"])).convert("RGB")).astype(int)
            self.assertEqual(rgb.shape, (b["height"], b["width"], 3))
            want_px = pixels[f["iteration"] - 1]
            if r.c == 1:
                self.assertTrue((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all())
                want_px = np.repeat(want_px, 3, 0)
            ref_px = np.rint(want_px.transpose(1, 2, 0) * 255).astype(int)
            self.assertLessEqual(np.abs(rgb - ref_px).max(), 1, (model, f["iteration"]))

    def test_from_image(self):
        """POST starts from the upload, preprocessed. The optimisation is followed step by step where
        it is well conditioned: on the MLP from a test image, on the CNN without padding and on the
        three-channel one from a noisy test image. On the padded VGG a start with flat regions (the
        black border) gives max-pool ties after one step, where PyTorch's own gradient at batch 1 and
        batch 2 differs by ~20%: only the first step is compared there."""
        noisy = np.clip(IMAGES[0].astype(int) + np.random.default_rng(0).integers(0, 60, (28, 28)), 0, 255)
        noisy = noisy.astype(np.uint8)
        for model, c, img, iterations in (("mlp", 3, IMAGES[0], 8), ("noavg", 3, noisy, 8), ("crop", 2, noisy, 8),
                                          ("vgg", 7, IMAGES[0], 1)):
            with self.subTest(model=model):
                r = ref(model)
                every = 2 if iterations > 1 else 1
                st, _, b = self.d.json("POST", "/v1/models/%s/classes/%d/visualize?format=json&iterations=%d&every=%d"
                                       "&l2=0.05" % (model, c, iterations, every), fx.png_gray(img),
                                       {"Content-Type": "image/png"})
                self.assertEqual(st, 200, b)
                self.assertEqual((b["model"], b["start"], b["iterations"], b["every"]),
                                 (model, "image", iterations, every))
                self.assertAlmostEqual(b["l2"], 0.05, places=6)
                self.assertEqual([f["iteration"] for f in b["frames"]], list(range(every, iterations + 1, every)))
                self.assertEqual((b["width"], b["height"]), (r.w, r.h))
                x0 = r.preprocess(img)
                self.assertAlmostEqual(b["score"][0], float(r.scores(x0, c)[0]),
                                       delta=1e-5 * max(1, abs(b["score"][0])))
                self.check_viz(model, b, x0, c, rises=model in ("mlp", "vgg"))

    def test_random_start(self):
        """GET starts from the filter route's seeded image; defaults: 30 iterations, a frame every 5,
        lr 0.1, l2 0.01, seed 0."""
        for model, c in (("vgg", 1), ("mlp", 9)):
            st, _, b = self.d.json("GET", "/v1/models/%s/classes/%d/visualize?format=json" % (model, c))
            self.assertEqual(st, 200, b)
            self.assertEqual((b["start"], b["iterations"], b["every"], b["seed"], len(b["frames"])),
                             ("random", 30, 5, 0, 6))
            self.assertAlmostEqual(b["lr"], 0.1, places=6)
            self.assertAlmostEqual(b["l2"], 0.01, places=6)
            self.check_viz(model, b, random_start(ref(model), 0), c)
            st, _, b3 = self.d.json("GET", "/v1/models/%s/classes/%d/visualize?format=json&iterations=3&every=1&seed=9"
                                    % (model, c))
            self.check_viz(model, b3, random_start(ref(model), 9), c)

    def test_l2_matters(self):
        q = "/v1/models/vgg/classes/2/visualize?format=json&iterations=10&every=10&lr=0.5&l2="
        a = self.d.json("GET", q + "0")[2]["score"]
        b = self.d.json("GET", q + "5")[2]
        self.assertNotAlmostEqual(a[-1], b["score"][-1], places=3)
        self.check_viz("vgg", b, random_start(ref("vgg"), 0), 2)

    def test_class_by_name(self):
        for model in ("vgg", "mlp"):
            q = "?format=json&iterations=4&every=2"
            a = self.d.json("GET", "/v1/models/%s/classes/7/visualize%s" % (model, q))[2]
            b = self.d.json("GET", "/v1/models/%s/classes/Sneaker/visualize%s" % (model, q))[2]
            a.pop("timing_ms")
            b.pop("timing_ms")
            self.assertEqual(a, b)
            st, _, c = self.d.json("GET", "/v1/models/%s/classes/Ankle%%20boot/visualize%s" % (model, q))
            self.assertEqual((st, c["class"]), (200, {"index": 9, "class": "Ankle boot"}), c)

    def test_png_strip(self):
        for model, size in (("vgg", 32), ("mlp", 28)):
            st, h, body = self.d.request("GET", "/v1/models/%s/classes/3/visualize?iterations=6&every=2&scale=2"
                                         % model)
            self.assertEqual((st, h["content-type"]), (200, "image/png"), body[:200])
            self.assertEqual(decode_png(body).size, (3 * size * 2, size * 2))
            st, _, b = self.d.json("GET", "/v1/models/%s/classes/3/visualize?iterations=6&every=2&scale=2&format=json"
                                   % model)
            strip = np.asarray(decode_png(body).convert("RGB"))
            for i, f in enumerate(b["frames"]):
                frame = np.asarray(decode_png(base64.b64decode(f["png"])).convert("RGB"))
                np.testing.assert_array_equal(strip[:, 2 * size * i:2 * size * (i + 1)], frame)


class Cli(fx.CliAgainstDaemon):
    """`loupe explain` and `loupe visualize --class` write what the routes answer."""
    loupe = LOUPE
    store = STORE

    def same_json(self, cli_out, api_out):
        got, want = json.loads(cli_out), json.loads(api_out)
        self.assertIn("timing_ms", want)
        got.pop("timing_ms", None)
        want.pop("timing_ms")
        self.assertEqual(got, want)

    def test_json(self):
        for model, args, q in (
                ("mlp", ["--method", "integrated_gradients", "--steps", "9", "--baseline", "zero", "--target", "3"],
                 "method=integrated_gradients&steps=9&baseline=zero&target=3"),
                ("vgg", ["--method", "gradcam", "--layer", "29"], "method=gradcam&layer=29"),
                ("vgg", ["--method", "smoothgrad", "--samples", "5", "--noise", "0.3", "--seed", "11"],
                 "method=smoothgrad&samples=5&noise=0.3&seed=11"),
                ("mlp", ["--method", "occlusion", "--window", "6", "--stride", "5"],
                 "method=occlusion&window=6&stride=5")):
            with self.subTest(model=model, args=args):
                out = self.cli("explain", os.path.join(STORE, model), self.img, *args, "--json").stdout
                self.same_json(out, self.api("POST", "/v1/models/%s/explain?format=json&%s" % (model, q), png(0)))
        path = os.path.join(self.tmp, "ig.json")
        self.cli("explain", os.path.join(STORE, "vgg"), self.img, "--method", "guided_backprop", "--json",
                 "--out", path)
        with open(path, "rb") as f:
            self.same_json(f.read(), self.api("POST", "/v1/models/vgg/explain?format=json&method=guided_backprop",
                                              png(0)))

    def test_png(self):
        out = os.path.join(self.tmp, "e.png")
        for model, args, q in (("vgg", ["--method", "guided_gradcam", "--scale", "3", "--overlay"],
                                "method=guided_gradcam&scale=3&overlay=1"),
                               ("mlp", ["--method", "input_x_gradient", "--invert", "false"],
                                "method=input_x_gradient&invert=false")):
            self.cli("explain", os.path.join(STORE, model), self.img, *args, "--out", out)
            with open(out, "rb") as f:
                self.assertEqual(f.read(), self.api("POST", "/v1/models/%s/explain?%s" % (model, q), png(0)), model)

    def test_visualize_class(self):
        out = os.path.join(self.tmp, "c.png")
        for model in ("vgg", "mlp"):
            self.cli("visualize", os.path.join(STORE, model), "--class", "Sneaker", "--iterations", "6", "--every",
                     "3", "--l2", "0.1", "--seed", "2", "--out", out)
            with open(out, "rb") as f:
                self.assertEqual(f.read(), self.api("GET", "/v1/models/%s/classes/7/visualize?iterations=6&every=3"
                                                           "&l2=0.1&seed=2" % model), model)

    def test_errors(self):
        r = self.cli("explain", os.path.join(STORE, "mlp"), self.img, "--method", "gradcam", "--json", ok=False)
        self.assertNotEqual(r.returncode, 0)
        r = self.cli("explain", os.path.join(STORE, "vgg"), self.img, "--method", "lime", "--json", ok=False)
        self.assertEqual(r.returncode, 2, r.stderr)
        r = self.cli("explain", os.path.join(STORE, "vgg"), self.img, "--method", "smoothgrad", "--samples", "0",
                     "--json", ok=False)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(b"samples", r.stderr)


if __name__ == "__main__":
    if sys.argv[1:] == ["--make-store"]:
        make_store(STORE)
        sys.exit(0)
    unittest.main(argv=[sys.argv[0]] + sys.argv[1:], verbosity=2)
