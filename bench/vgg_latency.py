#!/usr/bin/python3
"""Latency of the default VGG (VGG16-BN, width 0.25, 32x32) served by `loupe serve`, against
PyTorch eager on the same weights, in the same run.

    /usr/bin/python3 bench/vgg_latency.py [--model models/vgg16-w25] [--loupe build/cli/loupe]

Without --model (and without models/vgg16-w25) a default-architecture VGG is trained for one
short epoch into a temporary folder: latency depends on the architecture, not on the weights.

Measured, each as the median (p50) of repeated calls:
- predict: batch 1. Loupe: POST /v1/models/{m}/predict with a 28x28 PNG over a keep-alive
  connection (the round trip: HTTP, PNG decode, preprocessing, forward, JSON), and the daemon's
  own timing_ms.inference (the libtorch forward); PyTorch: model(x) under no_grad.
- saliency: Loupe: POST .../saliency (PNG heatmap; round trip) and timing_ms.inference
  (forward + input gradient); PyTorch: forward, then backward of the predicted class's score to
  the input (the same two passes), |grad|.
- filter visualization, 30 iterations of Adam (lr 0.1, weight decay 1e-6) on the last
  convolution (layer 40) from a seeded random image, a frame every 5: Loupe: GET
  .../filters/40/5 (round trip) and timing_ms.inference; PyTorch: the same loop in eager mode.
Both sides use one intra-op thread (the daemon's default, --torch-threads 1).
"""
import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "training"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import export_vgg  # noqa: E402
import loupe_fixture as fx  # noqa: E402


def p50(xs):
    return statistics.median(xs)


def train_quick(out):
    subprocess.run([sys.executable, os.path.join(ROOT, "training", "train_vgg.py"), "--epochs", "1",
                    "--train-subset", "256", "--val-subset", "128", "--test-subset", "128", "--quiet",
                    "--out", out], check=True)


class LoupeSide:
    """`loupe serve` on the model; each measure returns (round trip, timing_ms.inference) in seconds."""

    def __init__(self, loupe, store, name, png, layer, filt):
        self.d = fx.Daemon(loupe, store, "--threads", "2", "--torch-threads", "1", "--access-log", "off",
                           "--drain-grace", "0")
        self.c = http.client.HTTPConnection("127.0.0.1", self.d.port, timeout=120)
        self.png = png
        base = "/v1/models/%s" % name
        self.paths = {"predict": ("POST", base + "/predict", base + "/predict"),
                      "saliency": ("POST", base + "/saliency", base + "/saliency?format=json"),
                      "filter": ("GET", "%s/filters/%d/%d?iterations=30&every=5&seed=0" % (base, layer, filt),
                                 "%s/filters/%d/%d?iterations=30&every=5&seed=0&format=json" % (base, layer, filt))}

    def call(self, method, path):
        body = self.png if method == "POST" else None
        t = time.perf_counter()
        self.c.request(method, path, body=body, headers={"Content-Type": "image/png"} if body else {})
        r = self.c.getresponse()
        data = r.read()
        dt = time.perf_counter() - t
        if r.status != 200:  # not an assert: python3 -O would drop it and time error answers
            raise RuntimeError("%s answered %d: %r" % (path, r.status, data[:300]))
        return dt, data

    def measure(self, key):
        method, path, jpath = self.paths[key]
        rt = self.call(method, path)[0]
        inf = json.loads(self.call(method, jpath)[1])["timing_ms"]["inference"] / 1e3
        return rt, inf

    def close(self):
        self.c.close()
        self.d.stop()


class TorchSide:
    """PyTorch on the checkpoint's weights: eager (the trainer's module) and the same model.ts."""

    def __init__(self, model_dir, img, layer, filt):
        torch.set_num_threads(1)
        ck = export_vgg.load_checkpoint(os.path.join(model_dir, "checkpoint.pt"))
        self.eager = export_vgg.build(ck)
        for p in self.eager.parameters():
            p.requires_grad_(False)
        self.jit = torch.jit.load(os.path.join(model_dir, "model.ts"))
        self.jit.eval()
        inp = self.inp = export_vgg.manifest_of(ck)["input"]
        x = torch.from_numpy(img.astype(np.float32) / 255.0)[None, None]
        pad = inp["height"] - 28
        x = torch.nn.functional.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
        self.mean = torch.tensor(inp["mean"]).view(1, -1, 1, 1)
        self.std = torch.tensor(inp["std"]).view(1, -1, 1, 1)
        self.x = ((x - self.mean) / self.std).contiguous()
        self.feats = list(self.eager.features.children())[:layer + 1]
        self.filt = filt

    def predict(self, model):
        with torch.no_grad():
            return torch.softmax(model(self.x), 1)

    def saliency(self, model):
        xi = self.x.clone().requires_grad_(True)
        logits = model(xi)
        t = int(logits.argmax())
        g, = torch.autograd.grad(logits[0, t], xi)
        return g.abs()

    def filter(self, model):
        inp = self.inp
        gen = torch.Generator().manual_seed(0)
        pix = (150 + 30 * torch.rand(1, inp["channels"], inp["height"], inp["width"], generator=gen)) / 255
        im = ((pix - self.mean) / self.std).requires_grad_(True)
        opt = torch.optim.Adam([im], lr=0.1, weight_decay=1e-6)
        frames = []
        for i in range(1, 31):
            opt.zero_grad()
            a = im
            for f in self.feats:
                a = f(a)
            loss = -a[0, self.filt].mean()
            loss.backward()
            opt.step()
            if i % 5 == 0:
                frames.append((im.detach() * self.std + self.mean).clamp(0, 1))
        return frames

    def measure(self, key, jit=False):
        model = self.jit if jit else self.eager
        t = time.perf_counter()
        getattr(self, key)(model)
        return time.perf_counter() - t


def interleaved(lo, th, key, n, chunk, warm):
    """Alternate chunks of Loupe and PyTorch calls, so both see the same machine load."""
    for _ in range(warm):
        lo.measure(key)
        th.measure(key)
        if key != "filter":
            th.measure(key, jit=True)
    rt, inf, eager, jit = [], [], [], []
    done = 0
    while done < n:
        k = min(chunk, n - done)
        for _ in range(k):
            a, b = lo.measure(key)
            rt.append(a)
            inf.append(b)
        for _ in range(k):
            eager.append(th.measure(key))
        if key != "filter":
            for _ in range(k):
                jit.append(th.measure(key, jit=True))
        done += k
    return p50(rt), p50(inf), p50(eager), p50(jit) if jit else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a default-recipe model folder with checkpoint.pt and model.ts "
                                    "(default: models/vgg16-w25, else a quick one-epoch model)")
    ap.add_argument("--loupe", default=os.path.join(ROOT, "build", "cli", "loupe"), help="the loupe binary")
    ap.add_argument("--predict", type=int, default=300, help="predict calls (default 300)")
    ap.add_argument("--saliency", type=int, default=100, help="saliency calls (default 100)")
    ap.add_argument("--filter", type=int, default=7, help="filter visualizations (default 7)")
    ap.add_argument("--layer", type=int, default=40, help="convolution to visualise (default 40, the last)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="loupe-vgg-bench-")
    try:
        src = args.model or os.path.join(ROOT, "models", "vgg16-w25")
        if not os.path.exists(os.path.join(src, "checkpoint.pt")):
            src = os.path.join(tmp, "train", "vgg16-w25")
            print("training a one-epoch default-architecture VGG for timing ...", file=sys.stderr)
            train_quick(src)
        store = os.path.join(tmp, "store")
        os.makedirs(store)
        name = "vgg16-w25"
        os.symlink(os.path.abspath(src), os.path.join(store, name))
        images, _ = fx.test_set()
        png = fx.png_gray(images[0])
        filt = 5
        lo = LoupeSide(args.loupe, store, name, png, args.layer, filt)
        try:
            th = TorchSide(src, images[0], args.layer, filt)
            res = {"predict": interleaved(lo, th, "predict", args.predict, 25, 20),
                   "saliency": interleaved(lo, th, "saliency", args.saliency, 10, 5),
                   "filter": interleaved(lo, th, "filter", args.filter, 1, 1)}
        finally:
            lo.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print("VGG16-BN width 0.25, 32x32, batch 1, one intra-op thread; %s, torch %s" %
          (os.uname().machine, torch.__version__))
    print("%-34s %12s %12s %12s %8s %14s" % ("", "loupe HTTP", "loupe infer", "torch eager", "ratio*",
                                             "torch jit (py)"))
    rows = {}
    for key, label in (("predict", "predict p50"), ("saliency", "saliency p50"),
                       ("filter", "filter viz, 30 it, layer %d p50" % args.layer)):
        http_s, inf_s, eager, jit = res[key]
        rows[key] = {"loupe_http_ms": http_s * 1e3, "loupe_inference_ms": inf_s * 1e3, "torch_eager_ms": eager * 1e3,
                     "ratio_inference_over_torch": inf_s / eager, "ratio_http_over_torch": http_s / eager,
                     "torch_jit_python_ms": jit * 1e3 if jit else None}
        print("%-34s %9.2f ms %9.2f ms %9.2f ms %7.2fx %11s" % (label, http_s * 1e3, inf_s * 1e3, eager * 1e3,
                                                               http_s / eager,
                                                               "%.2f ms" % (jit * 1e3) if jit else "-"))
    print("* ratio: Loupe's whole HTTP round trip over PyTorch eager's compute alone (below 1: Loupe faster)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
