"""Integration tests of the CNN routes of `loupe serve` and of `loupe predict|saliency|visualize`.

A tiny VGG is trained at test time by the real trainer (training/train_vgg.py), so the whole path
(trainer -> TorchScript -> shim -> daemon) runs on every submission; PyTorch on the same model.ts is
the reference.

    LOUPE_BIN=build/cli/loupe LOUPE_CNN_STORE=/tmp/cnn-store /usr/bin/python3 test_cnn.py --make-store
    LOUPE_BIN=build/cli/loupe LOUPE_CNN_STORE=/tmp/cnn-store /usr/bin/python3 test_cnn.py Predict Filters ...
    LOUPE_BIN=build-tsan/cli/loupe /usr/bin/python3 test_cnn.py NoTorch   # a build without libtorch
"""
import base64
import concurrent.futures as cf
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loupe_fixture as fx  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LOUPE = os.environ.get("LOUPE_BIN", "build/cli/loupe")
STORE = os.environ.get("LOUPE_CNN_STORE", "/tmp/loupe-cnn-store")
QUICK = os.environ.get("LOUPE_QUICK", "0") == "1"  # a sanitizer build: slower, so lighter where timing matters
IMAGES, LABELS = fx.test_set()
CONV = 40  # the last convolution of VGG16-BN's features


def png(i):
    return fx.png_gray(IMAGES[i])


def decode_png(data):
    from PIL import Image
    return Image.open(io.BytesIO(data))


def make_store(root):
    """tiny: VGG16-BN at width 1/16 on 32x32 (pad); crop: VGG11 with the seed recipe's
    preprocessing (resize 256, centre crop, 3 channels, ImageNet mean/std) at crop 32; zero: an MLP."""
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    common = ["--epochs", "1", "--train-subset", "512", "--val-subset", "128", "--test-subset", "128",
              "--threads", "1", "--quiet"]
    train = [sys.executable, os.path.join(ROOT, "training", "train_vgg.py")]
    subprocess.run(train + ["--width", "0.0625", "--out", os.path.join(root, "tiny")] + common, check=True)
    subprocess.run(train + ["--depth", "11", "--width", "0.0625", "--head", "imagenet", "--input-size", "32",
                            "--out", os.path.join(root, "crop")] + common, check=True)
    fx.write_zero_model(os.path.join(root, "zero"))


# ==== PyTorch reference on the same model.ts ====

_torch_models = {}


def torch_model(name):
    import torch
    torch.set_num_threads(1)
    if name not in _torch_models:
        m = torch.jit.load(os.path.join(STORE, name, "model.ts"))
        m.eval()
        _torch_models[name] = m
    return _torch_models[name]


def manifest(name):
    with open(os.path.join(STORE, name, "model.json")) as f:
        return json.load(f)


def preprocess(name, img):
    """The trainer's preprocessing of a [28,28] uint8 image, as a [1,C,H,W] tensor."""
    import torch
    import torch.nn.functional as F
    inp = manifest(name)["input"]
    x = torch.from_numpy(img.astype(np.float32) / 255.0)[None, None]
    if inp["resize"] == "pad":
        p = inp["height"] - 28
        x = F.pad(x, (p // 2, p - p // 2, p // 2, p - p // 2))
    else:
        r, s = inp["resize_to"], inp["height"]
        x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
        o = (r - s) // 2
        x = x[:, :, o:o + s, o:o + s].expand(-1, inp["channels"], -1, -1)
    mean = torch.tensor(inp["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(inp["std"]).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous()


def torch_probs(name, img):
    import torch
    with torch.no_grad():
        return torch.softmax(torch_model(name)(preprocess(name, img)), 1)[0].numpy()


def torch_saliency(name, img, target):
    x = preprocess(name, img).requires_grad_(True)
    torch_model(name)(x)[0, target].backward()
    g = x.grad[0].abs().sum(0).numpy().astype(np.float64)
    top = np.percentile(g, 99)
    return np.minimum(g / top, 1.0)


def torch_features(name, img, layer):
    import torch
    x = preprocess(name, img)
    with torch.no_grad():
        for i, mod in enumerate(torch_model(name).features.children()):
            x = mod(x)
            if i == layer:
                return x[0].numpy()


def torch_gradcam(name, img, layer):
    """Grad-CAM as docs/api.md defines it, on the same model.ts: A = features[layer]'s output, the
    rest of features and the head (classifier(flatten(avgpool(y)))) on top; for the predicted class.
    Returns (layer_map [h,w], attribution [H,W], target)."""
    import torch
    import torch.nn.functional as F
    m = torch_model(name)
    x = preprocess(name, img)
    feats = list(m.features.children())
    with torch.no_grad():
        for mod in feats[:layer + 1]:
            x = mod(x)
    a = x.clone().requires_grad_(True)
    y = a
    for mod in feats[layer + 1:]:
        y = mod(y)
    out = m.classifier(torch.flatten(m.avgpool(y), 1))
    t = int(out[0].argmax())
    out[0, t].backward()
    w = a.grad[0].mean((1, 2))
    cam = torch.relu((w[:, None, None] * a[0]).sum(0)).detach()
    size = manifest(name)["input"]["height"], manifest(name)["input"]["width"]
    up = F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return cam.numpy(), up.numpy(), t


def random_start(name, seed):
    """The seeded start image of GET .../filters as [1,C,H,W] (loupe_fixture.random_start)."""
    import torch
    return torch.from_numpy(fx.random_start(manifest(name)["input"], seed))


def torch_filter_viz(name, x0, layer, filt, iterations, lr=0.1):
    """Activation maximisation as docs/api.md describes it, in PyTorch on the same model.ts: Adam
    (weight decay 1e-6) on the normalised image x0 [1,C,H,W], raising the mean activation of filter
    filt of layer. Returns (the mean before the first step and after each, iterations+1 values;
    the image after each step de-normalised to pixels in [0,1], [C,H,W])."""
    import torch
    model, inp = torch_model(name), manifest(name)["input"]
    mean = torch.tensor(inp["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(inp["std"]).view(1, -1, 1, 1)

    def activation(x):
        for i, mod in enumerate(model.features.children()):
            x = mod(x)
            if i == layer:
                return x[0, filt].mean()

    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr, weight_decay=1e-6)
    trace, pixels = [], []
    for _ in range(iterations):
        loss = -activation(x)
        trace.append(-loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
        pixels.append((x.detach() * std + mean).clamp(0, 1)[0].numpy())
    with torch.no_grad():
        trace.append(activation(x).item())
    return np.array(trace), pixels


# ==== Tests ====

class Served(unittest.TestCase):
    args = ("--threads", "4", "--drain-grace", "0", "--max-body", "1M", "--default-model", "tiny")
    env = None

    @classmethod
    def setUpClass(cls):
        cls.d = fx.Daemon(LOUPE, STORE, *cls.args, env=cls.env)

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        fx.require(rc == 0, "loupe serve exited %d\n%s" % (rc, cls.d.read_log()))

    def post(self, path, body, ctype="image/png"):
        return self.d.request("POST", path, body, {"Content-Type": ctype} if ctype else {})

    def post_json(self, path, body, ctype="image/png"):
        return self.d.json("POST", path, body, {"Content-Type": ctype} if ctype else {})

    def assert_error(self, st, body, status, code=None, words=()):
        self.assertEqual(st, status, body)
        self.assertIsInstance(body.get("error"), dict, body)
        if code:
            self.assertEqual(body["error"]["code"], code, body)
        for w in words:
            self.assertIn(w, body["error"]["message"])


class Predict(Served):
    def test_models_list(self):
        st, _, b = self.d.json("GET", "/v1/models")
        self.assertEqual(st, 200)
        kinds = {m["name"]: m["kind"] for m in b["models"]}
        self.assertEqual(kinds, {"tiny": "torchscript", "crop": "torchscript", "zero": "mlp"})
        tiny = [m for m in b["models"] if m["name"] == "tiny"][0]
        self.assertEqual((tiny["input"]["height"], tiny["input"]["resize"]), (32, "pad"))
        self.assertEqual(tiny["layers"], len(manifest("tiny")["layers"]))
        self.assertIn("model tiny: loaded (torchscript", self.d.read_log())

    def test_predict_matches_torch(self):
        for i in range(4):
            st, _, b = self.post_json("/v1/models/tiny/predict", png(i))
            self.assertEqual(st, 200, b)
            np.testing.assert_allclose(b["probabilities"], torch_probs("tiny", IMAGES[i]), atol=2e-6)
            self.assertEqual(b["index"], int(np.argmax(b["probabilities"])))
            self.assertEqual(b["class"], fx.CLASSES[b["index"]])
            self.assertEqual(len(b["top_k"]), 5)

    def test_resize_crop_matches_torch(self):
        """The seed recipe's preprocessing: bilinear to 256, centre crop, 3 channels, ImageNet mean/std."""
        self.assertEqual(manifest("crop")["input"]["resize"], "resize_crop")
        for i in range(3):
            st, _, b = self.post_json("/v1/models/crop/predict", png(i))
            self.assertEqual(st, 200, b)
            np.testing.assert_allclose(b["probabilities"], torch_probs("crop", IMAGES[i]), atol=1e-5)

    def test_input_forms_agree(self):
        st, _, ref = self.post_json("/v1/models/tiny/predict", png(0))
        rows = (IMAGES[0] / 255.0).tolist()
        body, ct = fx.multipart("image", png(0))
        for data, ctype in ((json.dumps({"pixels": rows}).encode(), "application/json"),
                            (json.dumps({"image": base64.b64encode(png(0)).decode()}).encode(), "application/json"),
                            (body, ct), (fx.pil_encode(IMAGES[0], "PNG", mode="RGB"), "image/png")):
            st, _, b = self.post_json("/v1/models/tiny/predict", data, ctype)
            self.assertEqual(st, 200, b)
            np.testing.assert_allclose(b["probabilities"], ref["probabilities"], atol=1e-6)

    def test_default_route(self):
        st, _, b = self.post_json("/predict", png(0), "application/x-www-form-urlencoded")
        self.assertEqual((st, b["model"]), (200, "tiny"))


class Saliency(Served):
    def test_png_sizes(self):
        for q, size in (("", 32), ("?scale=4", 128), ("?overlay=1&scale=2", 64), ("?target=Sneaker", 32)):
            st, h, body = self.post("/v1/models/tiny/saliency" + q, png(0))
            self.assertEqual((st, h["content-type"]), (200, "image/png"), body[:200])
            self.assertEqual(decode_png(body).size, (size, size), q)

    def test_json_matches_torch(self):
        for t in (0, 2, 9):
            st, _, b = self.post_json("/v1/models/tiny/saliency?format=json&target=%d" % t, png(1))
            self.assertEqual(st, 200, b)
            self.assertEqual((b["width"], b["height"], b["target"]["index"]), (32, 32, t))
            m = np.array(b["saliency"])
            self.assertEqual(m.shape, (32, 32))
            np.testing.assert_allclose(m, torch_saliency("tiny", IMAGES[1], t), atol=1e-4)

    def test_three_channel_model(self):
        st, _, b = self.post_json("/v1/models/crop/saliency?format=json&target=2", png(0))
        self.assertEqual(st, 200, b)
        np.testing.assert_allclose(np.array(b["saliency"]), torch_saliency("crop", IMAGES[0], 2), atol=1e-4)


class Layers(Served):
    def test_cnn_layers(self):
        st, _, b = self.d.json("GET", "/v1/models/tiny/layers")
        self.assertEqual(st, 200, b)
        want = manifest("tiny")["layers"]
        self.assertEqual(len(b["layers"]), len(want))
        for got, w in zip(b["layers"], want):
            self.assertEqual((got["index"], got["name"], got["type"]), (w["index"], w["name"], w["type"]))
            self.assertEqual(got["conv"], w["type"] == "conv2d")
            self.assertEqual(got["channels"], w["channels"])
        self.assertEqual((b["layers"][0]["height"], b["layers"][-1]["height"]), (32, 1))

    def test_mlp_has_none(self):
        st, _, b = self.d.json("GET", "/v1/models/zero/layers")
        self.assertEqual((st, b["kind"], b["layers"]), (200, "mlp", []))


class Filters(Served):
    def test_png_strip(self):
        st, h, body = self.d.request("GET", "/v1/models/tiny/filters/0/1?iterations=12&every=4&seed=3")
        self.assertEqual((st, h["content-type"]), (200, "image/png"), body[:200])
        self.assertEqual(decode_png(body).size, (3 * 32, 32))
        st, h, body = self.d.request("GET", "/v1/models/tiny/filters/0/1?iterations=12&every=4&seed=3&scale=2")
        self.assertEqual(decode_png(body).size, (3 * 64, 64))

    def test_json_frames(self):
        st, _, b = self.d.json("GET", "/v1/models/tiny/filters/%d/2?format=json&iterations=10&every=3&seed=5" % CONV)
        self.assertEqual(st, 200, b)
        self.assertEqual((b["iterations"], b["every"], b["seed"], b["start"]), (10, 3, 5, "random"))
        self.assertEqual([f["iteration"] for f in b["frames"]], [3, 6, 9])
        for f in b["frames"]:
            self.assertEqual(decode_png(base64.b64decode(f["png"])).size, (32, 32))
        trace = b["mean_activation"]
        self.assertEqual(len(trace), 11)
        self.assertGreater(trace[-1], trace[0])
        self.assert_matches_torch(b, random_start("tiny", 5), CONV, 2)

    def assert_matches_torch(self, b, x0, layer, filt):
        """The answer b is the documented optimisation from x0, step for step: its mean activations
        equal PyTorch's (float rounding apart) and each frame is PyTorch's image after that step, in
        8-bit gray (R = G = B)."""
        want, pixels = torch_filter_viz("tiny", x0, layer, filt, b["iterations"], b["lr"])
        np.testing.assert_allclose(b["mean_activation"], want, rtol=1e-4, atol=1e-6 * max(1.0, np.abs(want).max()))
        for f in b["frames"]:
            rgb = np.asarray(decode_png(base64.b64decode(f["png"])).convert("RGB")).astype(int)
            self.assertEqual(rgb.shape, (b["height"], b["width"], 3))
            self.assertTrue((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all())
            ref = np.rint(pixels[f["iteration"] - 1][0] * 255).astype(int)
            self.assertLessEqual(np.abs(rgb[..., 0] - ref).max(), 1, f["iteration"])

    def test_defaults_and_png_equals_json(self):
        st, _, b = self.d.json("GET", "/v1/models/tiny/filters/3/0?format=json")
        self.assertEqual((b["iterations"], b["every"], len(b["frames"]), b["lr"]), (30, 5, 6, 0.100000001))
        st, _, strip = self.d.request("GET", "/v1/models/tiny/filters/3/0")
        whole = np.array(decode_png(strip).convert("RGB"))
        for i, f in enumerate(b["frames"]):
            frame = np.array(decode_png(base64.b64decode(f["png"])).convert("RGB"))
            np.testing.assert_array_equal(whole[:, 32 * i:32 * (i + 1)], frame)

    def test_seeded(self):
        q = "/v1/models/tiny/filters/7/1?iterations=5&every=5&seed="
        a = self.d.request("GET", q + "1")[2]
        self.assertEqual(a, self.d.request("GET", q + "1")[2])
        self.assertNotEqual(a, self.d.request("GET", q + "2")[2])

    def test_random_start(self):
        """GET starts from pixels uniform in [150,180]/255: one step at a tiny rate leaves them there."""
        q = "/v1/models/tiny/filters/3/1?format=json&iterations=1&every=1&lr=0.000001&seed="
        frames = []
        for seed in (7, 7, 8):
            st, _, b = self.d.json("GET", q + str(seed))
            self.assertEqual((st, b["start"], b["seed"], len(b["frames"])), (200, "random", seed, 1), b)
            frames.append(np.asarray(decode_png(base64.b64decode(b["frames"][0]["png"])).convert("L")).astype(int))
        self.assertTrue(150 <= frames[0].min() and frames[0].max() <= 180, (frames[0].min(), frames[0].max()))
        self.assertGreater(frames[0].std(), 5)  # uniform over 30 levels: about 8.7
        np.testing.assert_array_equal(frames[0], frames[1])
        self.assertGreater(np.abs(frames[0] - frames[2]).mean(), 3)

    def test_from_image(self):
        """POST starts from the upload, preprocessed: the optimisation is PyTorch's from that image,
        it raises the filter's mean activation, and the same image gives the same frames."""
        q = "/v1/models/tiny/filters/3/1?format=json&iterations=6&every=2"
        st, _, b = self.post_json(q, png(0))
        self.assertEqual((st, b["start"], len(b["frames"])), (200, "image", 3), b)
        self.assertEqual([f["iteration"] for f in b["frames"]], [2, 4, 6])
        self.assert_matches_torch(b, preprocess("tiny", IMAGES[0]), 3, 1)
        trace = b["mean_activation"]
        self.assertAlmostEqual(trace[0], float(torch_features("tiny", IMAGES[0], 3)[1].mean()), places=5)
        self.assertGreater(trace[-1], trace[0])
        st, _, again = self.post_json(q, png(0))
        self.assertEqual((again["frames"], again["mean_activation"]), (b["frames"], trace))
        st, _, r = self.d.json("GET", q)
        self.assertEqual(r["start"], "random")
        self.assertGreater(abs(r["mean_activation"][0] - trace[0]), 1e-3)
        st, h, body = self.post("/v1/models/tiny/filters/3/1?iterations=4&every=2", png(0))
        self.assertEqual(decode_png(body).size, (64, 32))


class Activations(Served):
    def test_json_matches_torch(self):
        for layer in (0, 2, 13, CONV + 2):
            st, _, b = self.post_json("/v1/models/tiny/activations/%d?format=json" % layer, png(0))
            self.assertEqual(st, 200, b)
            a = np.array(b["activations"])
            want = torch_features("tiny", IMAGES[0], layer)
            self.assertEqual(a.shape, want.shape)
            self.assertEqual(list(a.shape), [b["layer"]["channels"], b["layer"]["height"], b["layer"]["width"]])
            np.testing.assert_allclose(a, want, atol=1e-5 * max(1, np.abs(want).max()))

    def test_png_grid(self):
        # 4 channels of 32x32: a 2x2 grid with one-pixel gaps; 8 of 16x16 at scale 2: 3x3 of 32 + 2.
        for layer, q, size in ((2, "", 65), (9, "?scale=2", 3 * 32 + 2)):
            st, h, body = self.post("/v1/models/tiny/activations/%d%s" % (layer, q), png(0))
            self.assertEqual((st, h["content-type"]), (200, "image/png"), body[:200])
            self.assertEqual(decode_png(body).size, (size, size))


class BadParams(Served):
    """Each bad parameter is its own case; the daemon keeps answering."""

    def tearDown(self):
        st, _, b = self.post_json("/v1/models/tiny/predict", png(0))
        self.assertEqual(st, 200, b)

    def get(self, path):
        return self.d.json("GET", path)

    def test_layer_missing(self):
        for l in ("44", "999", "x", "-1"):
            self.assert_error(*self.get("/v1/models/tiny/filters/%s/0" % l)[::2], 404, "not_found", ("0..43",))
            self.assert_error(*self.post_json("/v1/models/tiny/activations/%s" % l, png(0))[::2], 404, "not_found")

    def test_filter_missing(self):
        for f in ("4", "100", "y"):
            self.assert_error(*self.get("/v1/models/tiny/filters/0/%s" % f)[::2], 404, "not_found", ("0..3",))

    def test_not_a_convolution(self):
        self.assert_error(*self.get("/v1/models/tiny/filters/2/0")[::2], 400, "bad_parameter",
                          ("relu", "0, 3, 7"))

    def test_iterations(self):
        for v in ("0", "201", "-5", "abc", "", "1.5"):
            self.assert_error(*self.get("/v1/models/tiny/filters/0/0?iterations=" + v)[::2], 400, "bad_parameter",
                              ("[1,200]",))

    def test_every(self):
        for v in ("0", "x"):
            self.assert_error(*self.get("/v1/models/tiny/filters/0/0?every=" + v)[::2], 400, "bad_parameter",
                              ("[1,30]",))
        self.assert_error(*self.get("/v1/models/tiny/filters/0/0?iterations=10&every=11")[::2], 400,
                          "bad_parameter", ("[1,10]",))

    def test_lr(self):
        for v in ("0", "-0.1", "10.5", "nan", "inf", "abc"):
            self.assert_error(*self.get("/v1/models/tiny/filters/0/0?lr=" + v)[::2], 400, "bad_parameter",
                              ("(0,10]",))

    def test_seed(self):
        for v in ("-1", "abc", "99999999999999999999999", str(1 << 63)):
            self.assert_error(*self.get("/v1/models/tiny/filters/0/0?seed=" + v)[::2], 400, "bad_parameter")
        st, _, body = self.d.json("GET", "/v1/models/tiny/filters/0/0?iterations=1&every=1&format=json&seed=%d"
                                  % ((1 << 63) - 1))
        self.assertEqual((st, body["seed"]), (200, (1 << 63) - 1), body)

    def test_format_and_scale(self):
        for q in ("format=gif", "scale=0", "scale=33", "scale=x"):
            self.assert_error(*self.get("/v1/models/tiny/filters/0/0?" + q)[::2], 400, "bad_parameter")
            self.assert_error(*self.post_json("/v1/models/tiny/activations/0?" + q, png(0))[::2], 400,
                              "bad_parameter")
            self.assert_error(*self.post_json("/v1/models/tiny/saliency?" + q, png(0))[::2], 400, "bad_parameter")

    def test_saliency_target(self):
        for t in ("10", "Nope"):
            self.assert_error(*self.post_json("/v1/models/tiny/saliency?target=" + t, png(0))[::2], 400,
                              "bad_parameter", ("[0,9]",))

    def test_mlp_cannot(self):
        self.assert_error(*self.get("/v1/models/zero/filters/0/0")[::2], 422, "unprocessable", ("MLP",))
        self.assert_error(*self.post_json("/v1/models/zero/activations/0", png(0))[::2], 422, "unprocessable")

    def test_unknown_model(self):
        self.assert_error(*self.get("/v1/models/nope/filters/0/0")[::2], 404, "model_not_found")
        self.assert_error(*self.get("/v1/models/nope/layers")[::2], 404, "model_not_found")

    def test_no_body(self):
        self.assert_error(*self.post_json("/v1/models/tiny/activations/0", b"")[::2], 400, "empty_body")
        self.assert_error(*self.post_json("/v1/models/tiny/saliency", b"")[::2], 400, "empty_body")

    def test_bad_image(self):
        self.assert_error(*self.post_json("/v1/models/tiny/filters/0/0", png(0)[:60])[::2], 400, "bad_image")

    def test_oversize(self):
        for path in ("/v1/models/tiny/filters/0/0", "/v1/models/tiny/activations/0", "/v1/models/tiny/saliency"):
            raw = self.d.raw(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                             b"Content-Length: %d\r\n\r\n" % (path.encode(), (1 << 20) + 1))
            self.assertTrue(raw.startswith(b"HTTP/1.1 413"), (path, raw[:100]))
        bomb = fx.png_bomb(10000, 5000)
        self.assert_error(*self.post_json("/v1/models/tiny/filters/0/0", bomb)[::2], 413, "payload_too_large")

    def test_method(self):
        st, h, b = self.d.json("GET", "/v1/models/tiny/activations/0")
        self.assert_error(st, b, 405, "method_not_allowed")
        self.assertEqual(h["allow"], "POST")


class V2(Served):
    def test_metadata(self):
        st, _, b = self.d.json("GET", "/v2/models/tiny")
        self.assertEqual(st, 200, b)
        self.assertEqual(b["inputs"][0]["shape"], [-1, 1, 32, 32])
        st, _, b = self.d.json("GET", "/v2/models/crop")
        self.assertEqual(b["inputs"][0]["shape"], [-1, 3, 32, 32])

    def test_infer_agrees_with_predict(self):
        idx = list(range(5))
        x = np.concatenate([preprocess("tiny", IMAGES[i]).numpy() for i in idx])
        body = {"id": "7", "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                       "data": x.reshape(-1).tolist()}]}
        st, _, b = self.post_json("/v2/models/tiny/infer", json.dumps(body).encode(), "application/json")
        self.assertEqual(st, 200, b)
        out = np.array(b["outputs"][0]["data"]).reshape(5, 10)
        for k, i in enumerate(idx):
            st, _, p = self.post_json("/v1/models/tiny/predict", png(i))
            np.testing.assert_allclose(out[k], p["probabilities"], atol=1e-6)

    def test_bad_shape(self):
        for shape in ([1, 1024], [1, 1, 28, 28], [1, 3, 32, 32]):
            n = int(np.prod(shape))
            body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "data": [0.0] * n}]}
            st, _, b = self.post_json("/v2/models/tiny/infer", json.dumps(body).encode(), "application/json")
            self.assertEqual(st, 400, b)
            self.assertIn("[N,1,32,32]", b["error"])


class Busy(Served):
    """One worker and one queue slot: concurrent filter requests past them get 429; predict still answers."""
    args = Served.args + ("--expensive-concurrency", "1", "--expensive-queue", "1")

    def test_429_while_predict_answers(self):
        n = 8
        gate = threading.Barrier(n + 1)

        def slow(_):
            gate.wait()
            # Long enough that the eight overlap; under a sanitizer (LOUPE_QUICK) fewer do.
            it = 50 if QUICK else 200
            return self.d.request("GET", "/v1/models/tiny/filters/%d/0?iterations=%d&every=%d" % (CONV, it, it))

        with cf.ThreadPoolExecutor(n) as ex:
            futs = [ex.submit(slow, i) for i in range(n)]
            gate.wait()
            predicts = [self.post_json("/v1/models/tiny/predict", png(i % 10))[0] for i in range(10)]
            results = [f.result() for f in futs]
        self.assertEqual(predicts, [200] * 10)
        codes = sorted(st for st, _, _ in results)
        self.assertGreaterEqual(codes.count(200), 1, codes)
        self.assertGreaterEqual(codes.count(429), 1, codes)
        self.assertEqual(set(codes), {200, 429}, codes)
        for st, h, body in results:
            if st == 429:
                self.assertEqual(h.get("retry-after"), "1")
                self.assertEqual(json.loads(body)["error"]["code"], "too_many_requests")
        from prometheus_client.parser import text_string_to_metric_families
        fams = {f.name: f for f in text_string_to_metric_families(self.d.request("GET", "/metrics")[2].decode())}
        rejected = {(s.labels["lane"], s.labels["reason"]): s.value for s in fams["loupe_queue_rejected"].samples}
        self.assertEqual(rejected[("heavy", "full")], codes.count(429))
        waits = {s.labels["lane"]: s.value for s in fams["loupe_queue_wait_seconds"].samples
                 if s.name == "loupe_queue_wait_seconds_count"}
        self.assertGreaterEqual(waits["heavy"], codes.count(200))


class V2Busy(Served):
    """V2 infer on a CNN runs on the main lane's workers: past its queue it gets 429 at once."""
    args = Served.args + ("--workers", "1", "--queue", "1")
    env = {"LOUPE_TEST_HOOKS": "1"}

    def test_v2_past_the_queue(self):
        import re
        import time

        def queued():
            text = self.d.request("GET", "/metrics")[2].decode()
            m = re.search(r'^loupe_queue_queued\{lane="main"\} (\S+)$', text, re.M)
            return float(m.group(1)) if m else 0.0

        def running():
            text = self.d.request("GET", "/metrics")[2].decode()
            m = re.search(r'^loupe_queue_running\{lane="main"\} (\S+)$', text, re.M)
            return float(m.group(1)) if m else 0.0

        def wait(cond):
            end = time.time() + 30
            while time.time() < end and not cond():
                time.sleep(0.01)
            self.assertTrue(cond())

        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 1, 32, 32],
                                       "data": [0.0] * 2048}]}).encode()
        with cf.ThreadPoolExecutor(4) as ex:
            held = ex.submit(self.d.request, "POST", "/v1/test/hold")
            wait(lambda: running() == 1)
            first = ex.submit(self.post_json, "/v2/models/tiny/infer", body, "application/json")
            wait(lambda: queued() == 1)
            st, h, b = self.post_json("/v2/models/tiny/infer", body, "application/json")
            self.assertEqual(st, 429, b)
            self.assertEqual(h.get("retry-after"), "1")
            self.assertIn("full", b["error"])
            self.assertEqual(self.d.request("POST", "/v1/test/release")[0], 200)
            self.assertEqual(held.result(timeout=30)[0], 200)
            st, _, b = first.result(timeout=60)
            self.assertEqual(st, 200, b)
            self.assertEqual(b["outputs"][0]["shape"], [2, 10])


class Split(unittest.TestCase):
    """A CNN whose output is not head(features(x)) (its forward adds a bias of its own after the classifier) serves
    every explanation that needs only the whole model, and answers 422 with the reason for Grad-CAM and guided
    backprop, which need it split at a layer; the tiny VGG beside it splits."""

    @classmethod
    def setUpClass(cls):
        import torch
        from torch import nn

        class Odd(nn.Module):
            def __init__(self):
                super().__init__()
                self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
                self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
                self.classifier = nn.Linear(4, 10)
                self.shift = nn.Parameter(torch.linspace(-1, 1, 10))

            def forward(self, x):
                return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1)) + self.shift

        cls.tmp = tempfile.mkdtemp(prefix="loupe-split-")
        torch.manual_seed(0)
        odd = os.path.join(cls.tmp, "odd")
        os.makedirs(odd)
        torch.jit.save(torch.jit.script(Odd().eval()), os.path.join(odd, "model.ts"))
        man = manifest("tiny")
        man["name"] = "odd"
        man["layers"] = [{"index": i, "name": "features.%d" % i, "type": t, "channels": 4}
                         for i, t in enumerate(["conv2d", "relu", "maxpool2d"])]
        with open(os.path.join(odd, "model.json"), "w") as f:
            json.dump(man, f)
        shutil.copytree(os.path.join(STORE, "tiny"), os.path.join(cls.tmp, "tiny"))
        cls.d = fx.Daemon(LOUPE, cls.tmp, "--drain-grace", "0")

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        fx.require(rc == 0, "loupe serve exited %d\n%s" % (rc, cls.d.read_log()))

    def explain(self, model, method):
        st, _, body = self.d.json("POST", "/v1/models/%s/explain?method=%s&format=json" % (model, method), png(0),
                                  {"Content-Type": "image/png"})
        return st, body

    def test_whole_model_methods_work(self):
        for method in ("gradient", "input_x_gradient", "smoothgrad", "integrated_gradients", "occlusion"):
            st, body = self.explain("odd", method)
            self.assertEqual(st, 200, (method, body))
            self.assertEqual(np.array(body["attribution"]).shape, (1, 32, 32), method)

    def test_layer_methods_refused_with_the_reason(self):
        for method in ("gradcam", "guided_gradcam", "guided_backprop"):
            st, body = self.explain("odd", method)
            self.assertEqual(st, 422, (method, body))
            self.assertEqual(body["error"]["code"], "unprocessable", body)
            self.assertIn("head(features(x)) differs from the model's output", body["error"]["message"])
        st, _, info = self.d.json("GET", "/v1/models/odd")
        self.assertEqual(st, 200, info)
        self.assertEqual(sorted(info["explain"]["unavailable"]), ["gradcam", "guided_backprop", "guided_gradcam"])
        st, _, info = self.d.json("GET", "/v1/models/tiny")
        self.assertEqual(info["explain"]["unavailable"], {}, info)
        self.assertEqual(len(info["explain"]["methods"]), 8, info)

    def test_gradient_is_the_whole_models(self):
        import torch
        st, body = self.explain("odd", "gradient")
        self.assertEqual(st, 200, body)
        m = torch.jit.load(os.path.join(self.tmp, "odd", "model.ts"))
        x = preprocess("tiny", IMAGES[0]).requires_grad_(True)
        out = m(x)
        t = body["target"]["index"]
        self.assertEqual(t, int(out.argmax()))
        g, = torch.autograd.grad(out[0, t], x)
        ref = g[0].numpy()
        got = np.array(body["attribution"])
        self.assertLessEqual(np.abs(got - ref).max(), 1e-4 * np.abs(ref).max())


class Cli(fx.CliAgainstDaemon):
    """loupe predict|saliency|visualize write what the API answers."""
    loupe = LOUPE
    store = STORE

    def test_predict(self):
        got = json.loads(self.cli("predict", os.path.join(STORE, "tiny"), self.img).stdout)
        want = json.loads(self.api("POST", "/v1/models/tiny/predict", png(0)))
        for k in ("model", "class", "index", "probabilities", "top_k", "inverted"):
            self.assertEqual(got[k], want[k], k)

    def test_saliency_png_and_json(self):
        out = os.path.join(self.tmp, "s.png")
        self.cli("saliency", os.path.join(STORE, "tiny"), self.img, "--target", "2", "--scale", "3", "--overlay",
                 "--out", out)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), self.api("POST", "/v1/models/tiny/saliency?target=2&scale=3&overlay=1",
                                                png(0)))
        got = json.loads(self.cli("saliency", os.path.join(STORE, "tiny"), self.img, "--json").stdout)
        want = json.loads(self.api("POST", "/v1/models/tiny/saliency?format=json", png(0)))
        self.assertEqual(got["saliency"], want["saliency"])

    def test_visualize(self):
        out = os.path.join(self.tmp, "strip.png")
        self.cli("visualize", os.path.join(STORE, "tiny"), "--layer", "3", "--filter", "1", "--iterations", "8",
                 "--every", "2", "--seed", "4", "--out", out)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), self.api("GET", "/v1/models/tiny/filters/3/1?iterations=8&every=2&seed=4"))
        self.cli("visualize", os.path.join(STORE, "tiny"), "--layer", "3", "--filter", "1", "--image", self.img,
                 "--iterations", "4", "--out", out)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), self.api("POST", "/v1/models/tiny/filters/3/1?iterations=4", png(0)))

    def test_errors(self):
        r = self.cli("visualize", os.path.join(STORE, "tiny"), "--layer", "2", "--filter", "0", "--out", "x.png",
                     ok=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"not a convolution", r.stderr)
        r = self.cli("visualize", os.path.join(STORE, "tiny"), "--layer", "0", "--filter", "0", "--iterations",
                     "500", "--out", "x.png", ok=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"[1,200]", r.stderr)
        r = self.cli("predict", os.path.join(self.tmp, "nothing"), self.img, ok=False)
        self.assertEqual(r.returncode, 1)
        r = self.cli("saliency", os.path.join(STORE, "tiny"), self.img, ok=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"--out", r.stderr)


class Docs(Served):
    """The curl lines of docs/api.md's CNN section, as pasted (port and model name substituted)."""

    def test_examples(self):
        with open(os.path.join(ROOT, "docs", "api.md")) as f:
            text = f.read()
        blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
        work = tempfile.mkdtemp(prefix="loupe-cnn-docs-")
        env = dict(os.environ, PATH="/usr/bin:/bin")
        subprocess.run(["bash", "-c", blocks[0]], cwd=work, env=env, check=True)  # the sample inputs
        lines = [ln for b in blocks for ln in b.splitlines() if ln.startswith("curl ") and "vgg16-w25" in ln]
        self.assertGreaterEqual(len(lines), 6)
        for ln in lines:
            # -w appends the status on its own line, after the body (or after -o's file is written).
            cmd = ln.replace("localhost:8080", "127.0.0.1:%d" % self.d.port).replace("vgg16-w25", "tiny")
            r = subprocess.run(["bash", "-c", cmd + " -w '\\n%{http_code}'"], cwd=work, env=env, capture_output=True)
            self.assertEqual(r.returncode, 0, (ln, r.stderr))
            out, _, status = r.stdout.decode(errors="replace").rpartition("\n")
            with self.subTest(line=ln):
                self.check_example(ln.replace("vgg16-w25", "tiny"), int(status), out, work)

    def check_example(self, ln, status, out, work):
        """What the answer to one CNN curl line of docs/api.md must hold (shoe.png is IMAGES[0])."""
        self.assertEqual(status, 200, out[:300])
        layers = manifest("tiny")["layers"]
        if " -o " in ln:
            self.assertEqual(out, "")
            with open(os.path.join(work, ln.split(" -o ")[1].split()[0]), "rb") as f:
                data = f.read()
            self.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n")
            size = decode_png(data).size
            if "saliency?scale=8" in ln:
                self.assertEqual(size, (32 * 8, 32 * 8))
            elif "/filters/" in ln:
                q = dict(kv.split("=") for kv in ln.split("?")[1].rstrip("'").split("&"))
                frames = int(q["iterations"]) // int(q["every"])
                self.assertEqual(size, (frames * 32 * int(q["scale"]), 32 * int(q["scale"])))
            elif "/explain?method=gradcam&overlay=1&scale=8" in ln:
                self.assertEqual(size, (32 * 8, 32 * 8))
            elif "/classes/" in ln:
                q = dict(kv.split("=") for kv in ln.split("?")[1].rstrip("'").split("&"))
                frames = int(q["iterations"]) // int(q["every"])
                self.assertEqual(size, (frames * 32 * int(q["scale"]), 32 * int(q["scale"])))
            elif "/activations/2?scale=4" in ln:
                c = layers[2]["channels"]
                cols = math.ceil(math.sqrt(c))
                rows = math.ceil(c / cols)
                self.assertEqual(size, (cols * 32 * 4 + cols - 1, rows * 32 * 4 + rows - 1))
            else:
                self.fail("a PNG this test does not know")
            return
        b = json.loads(out)
        if ln.endswith("/predict"):
            self.assertEqual((b["model"], b["inverted"], b["batch"]), ("tiny", False, 1))
            self.assertEqual(b["class"], fx.CLASSES[b["index"]])
            want = torch_probs("tiny", IMAGES[0])
            np.testing.assert_allclose(b["probabilities"], want, atol=1e-5)
            self.assertEqual(b["index"], int(np.argmax(b["probabilities"])))
            self.assertEqual(len(b["top_k"]), 5)
        elif "saliency?format=json&target=Pullover" in ln:
            self.assertEqual(b["target"], {"index": 2, "class": "Pullover"})
            self.assertEqual((b["model"], b["width"], b["height"]), ("tiny", 32, 32))
            np.testing.assert_allclose(np.array(b["saliency"]), torch_saliency("tiny", IMAGES[0], 2), atol=1e-4)
        elif ln.endswith("/v2/models/tiny"):
            self.assertEqual((b["name"], b["platform"]), ("tiny", "loupe_torchscript"))
            self.assertEqual(b["inputs"], [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 32, 32]}])
            self.assertEqual(b["outputs"], [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}])
        elif ln.endswith("/layers"):
            self.assertEqual((b["model"], b["kind"]), ("tiny", "torchscript"))
            self.assertEqual([(x["index"], x["type"], x["conv"]) for x in b["layers"]],
                             [(i, x["type"], x["type"] == "conv2d") for i, x in enumerate(layers)])
            self.assertEqual([i for i, x in enumerate(b["layers"]) if x["conv"]],
                             [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40])  # as docs/api.md lists them
            want = [torch_features("tiny", IMAGES[0], i).shape for i in (0, CONV)]
            self.assertEqual([(b["layers"][i]["channels"], b["layers"][i]["height"], b["layers"][i]["width"])
                              for i in (0, CONV)], want)
        elif "/filters/40/5?format=json" in ln:
            self.assertEqual((b["start"], b["seed"], b["filter"], b["iterations"], b["every"]), ("random", 0, 5, 10, 5))
            self.assertEqual(b["layer"]["index"], 40)
            self.assertEqual([f["iteration"] for f in b["frames"]], [5, 10])
            want, _ = torch_filter_viz("tiny", random_start("tiny", 0), 40, 5, 10, b["lr"])
            np.testing.assert_allclose(b["mean_activation"], want, rtol=1e-4, atol=1e-6 * max(1.0, np.abs(want).max()))
        elif "/explain?method=gradcam&format=json" in ln:
            self.assertEqual((b["model"], b["method"], b["params"]), ("tiny", "gradcam", {"layer": 42}))
            self.assertEqual((b["layer"]["index"], b["layer"]["type"]), (42, "relu"))
            cam, up, t = torch_gradcam("tiny", IMAGES[0], 42)
            self.assertEqual(b["target"]["index"], t)
            self.assertEqual(list(cam.shape), [b["layer"]["height"], b["layer"]["width"]])
            tol = 1e-4 * max(np.abs(up).max(), 1e-12)
            np.testing.assert_allclose(np.array(b["layer_map"]), cam, atol=tol)
            np.testing.assert_allclose(np.array(b["attribution"]), up[None], atol=tol)
        elif "/activations/42?format=json" in ln:
            self.assertEqual(b["layer"]["index"], 42)
            want = torch_features("tiny", IMAGES[0], 42)
            self.assertEqual(list(want.shape), [b["layer"]["channels"], b["layer"]["height"], b["layer"]["width"]])
            np.testing.assert_allclose(np.array(b["activations"]), want, atol=1e-5 * max(1, np.abs(want).max()))
        else:
            self.fail("a CNN curl line of docs/api.md this test does not know: add what its answer must hold")


class OutputSize(unittest.TestCase):
    """A TorchScript model whose output size depends on its input: sized 10 on the
    load-time probe (zeros), 11 on a real image. The shim copied 11 floats into a
    buffer of 10 (a heap overflow, answered 200); now that request is a 500 that
    says why, and the daemon serves on."""

    def test_a_model_that_answers_another_size(self):
        import torch

        class Shifty(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.features = torch.nn.Sequential(torch.nn.ReLU())

            def forward(self, x):
                base = self.features(x).mean(dim=(1, 2, 3)).unsqueeze(1).repeat(1, 10)
                if bool(x.max() > 2.0):
                    return torch.cat([base, base[:, :1]], 1)
                return base

        root = tempfile.mkdtemp(prefix="loupe-shifty-")
        folder = os.path.join(root, "shifty")
        os.makedirs(folder)
        torch.jit.script(Shifty()).save(os.path.join(folder, "model.ts"))
        with open(os.path.join(folder, "model.json"), "w") as f:
            json.dump({"name": "shifty", "kind": "torchscript", "classes": fx.CLASSES,
                       "input": {"channels": 1, "height": 28, "width": 28, "mean": [0.0], "std": [0.1]},
                       "layers": []}, f)
        fx.write_zero_model(os.path.join(root, "zero"))
        d = fx.Daemon(LOUPE, root, "--drain-grace", "0")
        try:
            st, _, b = d.json("GET", "/v1/models")
            self.assertEqual(sorted(m["name"] for m in b["models"]), ["shifty", "zero"], d.read_log())
            for _ in range(3):
                st, _, b = d.json("POST", "/v1/models/shifty/predict?invert=false", png(0),
                                  {"Content-Type": "image/png"})
                self.assertEqual(st, 500, b)
                self.assertIn("answered 11 values where its shapes at load give 10", b["error"]["message"])
                st, _, b = d.json("POST", "/v1/models/zero/predict", png(0), {"Content-Type": "image/png"})
                self.assertEqual(st, 200, b)
            st, _, b = d.json("POST", "/v1/models/shifty/saliency?format=json&invert=false", png(0),
                              {"Content-Type": "image/png"})
            self.assertEqual(st, 500, b)
        finally:
            self.assertEqual(d.stop(), 0, d.read_log())


class NoTorch(unittest.TestCase):
    """A build without libtorch refuses a TorchScript folder with a clear line and still serves MLPs."""

    def test_refused_cleanly(self):
        root = tempfile.mkdtemp(prefix="loupe-notorch-")
        fx.write_zero_model(os.path.join(root, "zero"))
        vgg = os.path.join(root, "vgg")
        os.makedirs(vgg)
        with open(os.path.join(vgg, "model.json"), "w") as f:
            json.dump({"name": "vgg", "kind": "torchscript", "classes": fx.CLASSES,
                       "input": {"channels": 1, "height": 32, "width": 32, "mean": [0.286], "std": [0.353],
                                 "resize": "pad"}, "layers": []}, f)
        with open(os.path.join(vgg, "model.ts"), "wb") as f:
            f.write(b"PK\x03\x04 not really a TorchScript archive")
        d = fx.Daemon(LOUPE, root, "--drain-grace", "0")
        try:
            self.assertIn("model vgg: skipped: this build has no libtorch", d.read_log())
            st, _, b = d.json("GET", "/v1/models")
            self.assertEqual([m["name"] for m in b["models"]], ["zero"])
            st, _, b = d.json("POST", "/v1/models/zero/predict", png(0), {"Content-Type": "image/png"})
            self.assertEqual(st, 200, b)
            st, _, b = d.json("POST", "/v1/models/vgg/predict", png(0), {"Content-Type": "image/png"})
            self.assertEqual((st, b["error"]["code"]), (404, "model_not_found"))
            st, _, b = d.json("GET", "/v1/models/zero/layers")
            self.assertEqual((st, b["layers"]), (200, []))
        finally:
            self.assertEqual(d.stop(), 0, d.read_log())
        img = os.path.join(root, "shoe.png")
        with open(img, "wb") as f:
            f.write(png(0))
        r = subprocess.run([LOUPE, "predict", vgg, img], capture_output=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"this build has no libtorch", r.stderr)


if __name__ == "__main__":
    if sys.argv[1:] == ["--make-store"]:
        make_store(STORE)
        sys.exit(0)
    unittest.main(argv=[sys.argv[0]] + sys.argv[1:], verbosity=2)
