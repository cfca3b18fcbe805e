#!/usr/bin/python3
"""Latency of the eight explanation methods of POST /v1/models/{m}/explain on the default VGG
(VGG16-BN, width 0.25, 32x32), against the same methods in plain PyTorch eager on the same weights,
in one run (issue 12).

    /usr/bin/python3 bench/explain_latency.py [--model models/vgg16-w25] [--loupe build/cli/loupe]
                                              [--repeats 20]

Without --model (and without models/vgg16-w25) a default-architecture VGG is trained for one short
epoch into a temporary folder: latency depends on the architecture, not on the weights.

Each method runs with its default parameters (SmoothGrad 25 draws, integrated gradients 32 steps,
occlusion window 4 stride 2, Grad-CAM at the default layer, 42 in VGG16-BN), on one 28x28 test image
(padded to 32x32 as the model's manifest says). Measured, each as the median of repeated calls:
- Loupe's own time: timing_ms.inference of a format=json answer (the method's passes through
  libtorch, from the preprocessed tensor to the attribution; no decoding, no map, no encoding).
- Loupe's round trip: the same request with the default PNG answer, as a user would call it, over a
  keep-alive connection (HTTP, PNG decoding, preprocessing, the method, the heatmap's PNG).
- PyTorch eager: the same method written here (one function each, below), on the module that
  training/export_vgg.py builds from checkpoint.pt, from the preprocessed tensor to the attribution,
  parameters frozen (requires_grad False). The batched methods (SmoothGrad's draws, IG's steps,
  occlusion's windows) go through the model in batches of the size the daemon uses, which no route
  reports: EXPLAIN_BATCH of core/core_explain.c (32 since 0617b9f; occlusion puts x itself first
  in each batch, then 31 windows), read from this tree's source; in a tree without it (before
  0617b9f) the model's chunk, which the daemon's warm-up picked by timing and logged as "N images
  per pass at most"; --batch N to say it.
- The old `saliency` route (the vanilla gradient) against eager's gradient, the same way.
Both sides run one thread, under the same conditions. Eager runs in a worker process of this script
(the `--eager-worker` mode), started with the environment that needs (glibc and OpenBLAS read it at
start); this process, at the usual priority, is the HTTP client and asks the worker to time each
call (the worker's own clock, around the method alone):
- One intra-op thread: the daemon with --torch-threads 1, the worker with torch.set_num_threads(1)
  and OPENBLAS_NUM_THREADS=1. Python's torch here is Debian's 1.13, on the same libtorch_cpu and the
  same OpenBLAS as the daemon; at batch 1 its convolutions are im2col + OpenBLAS GEMMs
  (aten::_slow_conv2d, not oneDNN), and OpenBLAS starts its own threads unless told (the daemon
  sets 1 itself), which set_num_threads does not cover.
- The same heap settings: the daemon keeps blocks up to 32 MiB in glibc's heap (mallopt at start:
  a batch's activations are above glibc's default mmap threshold, and a fresh mapping per pass
  costs more than the pass); eager runs under the same MALLOC_MMAP_THRESHOLD_ and
  MALLOC_TRIM_THRESHOLD_ by default, glibc's defaults with --eager-malloc glibc.
- The same priority: the daemon runs explanations on its heavy lane, whose threads add 10 to their
  niceness so that cheap requests go first; on a machine shared with other work that alone costs
  a method most of its CPU. The eager worker runs at the same niceness (--eager-nice, default 10).

The two sides are interleaved: each round runs every method once (the single-pass ones five times),
Loupe and eager alternately and in alternating order, so a burst of other load hits both. The first
answer of each method is also checked against eager's attribution (max |a - r| / max |r|; SmoothGrad
draws its noise from another generator, so there only the target is compared).

Printed: per method, the medians, eager / Loupe (above 1: Loupe faster) for Loupe's own time and
for the round trip, and the issue's targets beside them (single-pass methods at least 1.2x eager,
batched ones at least 1.0x; Grad-CAM under 10 ms, IG(32) under 80 ms, SmoothGrad(25) under 70 ms,
occlusion(4,2) under 250 ms), with the CPU, its vector ISA and the load average. Written to
bench/results/explain_latency.json and .md (--out for another prefix).
"""
import argparse
import copy
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "training"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import loupe_fixture as fx  # noqa: E402
# The daemon's own heap settings (server/srv_cli.c), for --eager-malloc same.
DAEMON_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(128 << 20)}

# (name, route, single pass?) in the order of the table; "saliency" is the old route.
METHODS = [("gradient", "explain", True), ("input_x_gradient", "explain", True),
           ("guided_backprop", "explain", True), ("gradcam", "explain", True),
           ("guided_gradcam", "explain", True), ("smoothgrad", "explain", False),
           ("integrated_gradients", "explain", False), ("occlusion", "explain", False),
           ("saliency", "saliency", True)]
LABELS = {"gradient": "gradient", "input_x_gradient": "input x gradient", "guided_backprop": "guided backprop",
          "gradcam": "Grad-CAM (layer 42)", "guided_gradcam": "guided Grad-CAM", "smoothgrad": "SmoothGrad (25)",
          "integrated_gradients": "IG (32 steps)", "occlusion": "occlusion (4, 2)",
          "saliency": "saliency route (gradient)"}
# The absolute targets, ms, on 2 cores.
ABS_TARGET_MS = {"gradcam": 10.0, "integrated_gradients": 80.0, "smoothgrad": 70.0, "occlusion": 250.0}
SINGLE_RATIO, BATCHED_RATIO = 1.2, 1.0
SINGLE_PER_ROUND = 5  # a single-pass method runs this many times per round
TORCH_CHUNK = 64  # the TorchScript engine's largest pass (core/core_engine.c)
HEAVY_NICE = 10  # the daemon's heavy lane's niceness (server/srv_http.c, start_lanes)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a default-recipe model folder with checkpoint.pt and model.ts "
                                    "(default: models/vgg16-w25, else a quick one-epoch model)")
    ap.add_argument("--loupe", default=os.path.join(ROOT, "build", "cli", "loupe"),
                    help="the loupe binary (default build/cli/loupe)")
    ap.add_argument("--repeats", type=int, default=20,
                    help="rounds; each times every batched method once and every single-pass method %d times "
                         "(default 20: about a minute here)" % SINGLE_PER_ROUND)
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    ap.add_argument("--batch", type=int, help="images per batch of the batched methods on the eager side "
                                              "(default: what the daemon uses, see above)")
    ap.add_argument("--eager-malloc", choices=("same", "glibc"), default="same",
                    help="same: eager under the daemon's heap settings (default); glibc: glibc's defaults")
    ap.add_argument("--eager-nice", type=int, default=HEAVY_NICE,
                    help="niceness added to the eager worker (default %d, the daemon's heavy lane's; 0 for none)"
                         % HEAVY_NICE)
    ap.add_argument("--eager-worker", nargs=2, metavar=("MODEL_DIR", "CHUNK"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "explain_latency"),
                    help="write OUT.json and OUT.md (default bench/results/explain_latency); '' for none")
    args = ap.parse_args()
    if args.repeats < 1 or args.warmup < 0:
        ap.error("--repeats must be at least 1 and --warmup at least 0")
    return args


# Torch loads in the eager worker only, after its environment is set.
def imports():
    global torch, F, export_vgg
    import torch
    import torch.nn.functional as F
    import export_vgg


def explain_batch_of_tree():
    """EXPLAIN_BATCH of core/core_explain.c, capped by TORCH_CHUNK as explain_batch() caps it; None without it."""
    try:
        with open(os.path.join(ROOT, "core", "core_explain.c")) as f:
            m = re.search(r"^#define EXPLAIN_BATCH (\d+)", f.read(), re.M)
    except OSError:
        return None
    return min(int(m.group(1)), TORCH_CHUNK) if m else None


def train_quick(out):
    subprocess.run([sys.executable, os.path.join(ROOT, "training", "train_vgg.py"), "--epochs", "1",
                    "--train-subset", "256", "--val-subset", "128", "--test-subset", "128", "--quiet",
                    "--out", out], check=True)


# ==== The machine ====

CAP_VARS = ("ATEN_CPU_CAPABILITY", "DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE")


def cpu_info():
    model, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                k = k.strip()
                if k == "model name":
                    model = v.strip()
                elif k == "flags":
                    flags = set(v.split())
    except OSError:
        pass
    isa = [x for x in ("avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile", "avx2", "fma")
           if x in flags]
    level = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "neither AVX2 nor AVX-512"
    return {"model": model, "cores": os.cpu_count(), "isa_flags": isa, "isa": level}


def git_head():
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


# ==== Loupe ====

class LoupeSide:
    """`loupe serve` on the model; measure() returns (PNG round trip, timing_ms.inference, JSON answer)."""

    def __init__(self, loupe, store, name, png):
        self.args = ["--threads", "2", "--torch-threads", "1", "--access-log", "off", "--drain-grace", "0"]
        self.d = fx.Daemon(loupe, store, *self.args)
        self.c = http.client.HTTPConnection("127.0.0.1", self.d.port, timeout=300)
        self.png = png
        self.base = "/v1/models/%s" % name
        self.loaded = next((ln for ln in self.d.read_log().splitlines() if "model %s: loaded" % name in ln), "")
        m = re.search(r"(\d+) images per pass at most", self.loaded)
        # No number logged: the warm-up kept the engine's cap, TORCH_CHUNK (core/core_engine.c).
        self.chunk = int(m.group(1)) if m else TORCH_CHUNK

    def path(self, method, fmt):
        if method == "saliency":
            return self.base + "/saliency" + ("?format=json" if fmt == "json" else "")
        return "%s/explain?method=%s%s" % (self.base, method, "&format=json" if fmt == "json" else "")

    def info(self):
        """GET /v1/models/{m}."""
        self.c.request("GET", self.base)
        r = self.c.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError("%s answered %d: %r" % (self.base, r.status, data[:300]))
        return json.loads(data)

    def call(self, path):
        t = time.perf_counter()
        self.c.request("POST", path, body=self.png, headers={"Content-Type": "image/png"})
        r = self.c.getresponse()
        data = r.read()
        dt = time.perf_counter() - t
        if r.status != 200:  # not an assert: python3 -O would drop it and time error answers
            raise RuntimeError("%s answered %d: %r" % (path, r.status, data[:300]))
        return dt, data

    def measure(self, method):
        rt, png = self.call(self.path(method, "png"))
        if not png.startswith(b"\x89PNG"):
            raise RuntimeError("%s: not a PNG answer" % method)
        doc = json.loads(self.call(self.path(method, "json"))[1])
        return rt, doc["timing_ms"]["inference"] / 1e3, doc

    def close(self):
        self.c.close()
        self.d.stop()
        os.unlink(self.d.log_path)


# ==== PyTorch eager ====

def make_guided_relu():
    class GuidedReLUFn(torch.autograd.Function):
        """ReLU whose backward passes only positive gradients where the input was positive."""

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp(min=0)

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return g * ((x > 0) & (g > 0)).to(g.dtype)

    class GuidedReLUModule(torch.nn.Module):
        def forward(self, x):
            return GuidedReLUFn.apply(x)

    return GuidedReLUModule


class Eager:
    """The eight methods in plain PyTorch eager, as the issue defines them, on the checkpoint's module."""

    def __init__(self, model_dir, img, chunk):
        torch.set_num_threads(1)
        ck = export_vgg.load_checkpoint(os.path.join(model_dir, "checkpoint.pt"))
        self.model = export_vgg.build(ck)
        for p in self.model.parameters():
            p.requires_grad_(False)
        # guided backprop: the same weights, every nn.ReLU (features and head) guided
        self.guided = copy.deepcopy(self.model)
        guided_relu = make_guided_relu()
        for mod in self.guided.modules():
            for k, child in mod.named_children():
                if isinstance(child, torch.nn.ReLU):
                    setattr(mod, k, guided_relu())
        inp = export_vgg.manifest_of(ck)["input"]
        self.c, self.h, self.w = inp["channels"], inp["height"], inp["width"]
        mean = torch.tensor(inp["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(inp["std"], dtype=torch.float32).view(1, -1, 1, 1)
        x = torch.from_numpy(img.astype(np.float32) / 255.0)[None, None].expand(1, self.c, 28, 28)
        ph, pw = self.h - 28, self.w - 28
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        self.x = ((x - mean) / std).contiguous()
        self.x0 = ((torch.zeros(1, self.c, self.h, self.w) - mean) / std).contiguous()
        feats = list(self.model.features.children())
        last_conv = max(i for i, m in enumerate(feats) if isinstance(m, torch.nn.Conv2d))
        self.layer = next((i for i in range(last_conv + 1, len(feats)) if isinstance(feats[i], torch.nn.ReLU)),
                          last_conv)
        self.below = torch.nn.Sequential(*feats[:self.layer + 1])
        self.above = torch.nn.Sequential(*feats[self.layer + 1:])
        self.chunk = chunk

    def head(self, y):
        return self.model.classifier(torch.flatten(self.model.avgpool(y), 1))

    def target(self):
        """(target, logits of x): one forward pass, no gradient."""
        with torch.no_grad():
            z = self.model(self.x)[0]
        return int(z.argmax()), z

    def grad_sum(self, model, xs, t):
        """Sum over the batch of d score_t / d input."""
        xs.requires_grad_(True)
        out = model(xs)
        g, = torch.autograd.grad(out[:, t].sum(), xs)
        return g.sum(0)

    def gradient(self, model=None):
        x = self.x.clone().requires_grad_(True)
        out = (model or self.model)(x)
        t = int(out.argmax(1))
        g, = torch.autograd.grad(out[0, t], x)
        return g[0], t

    def input_x_gradient(self):
        g, t = self.gradient()
        return g * self.x[0], t

    def guided_backprop(self):
        return self.gradient(self.guided)

    def saliency(self):
        return self.gradient()

    def smoothgrad(self, samples=25, noise=0.15, seed=0):
        t, _ = self.target()
        sigma = noise * float(self.x.max() - self.x.min())
        gen = torch.Generator().manual_seed(seed)
        acc = torch.zeros(self.c, self.h, self.w)
        for b in range(0, samples, self.chunk):
            nb = min(self.chunk, samples - b)
            acc += self.grad_sum(self.model, self.x + sigma * torch.randn(nb, self.c, self.h, self.w, generator=gen), t)
        return acc / samples, t

    def integrated_gradients(self, steps=32):
        t, z = self.target()
        with torch.no_grad():
            z0 = self.model(self.x0)[0]
        d = self.x - self.x0
        alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
        acc = torch.zeros(self.c, self.h, self.w)
        for b in range(0, steps, self.chunk):
            a = alphas[b:b + self.chunk].view(-1, 1, 1, 1)
            acc += self.grad_sum(self.model, self.x0 + a * d, t)
        attr = d[0] * acc / steps
        self.last_delta = float(attr.sum() - (z[t] - z0[t]))
        return attr, t

    def gradcam(self):
        with torch.no_grad():
            a = self.below(self.x)
        a.requires_grad_(True)
        out = self.head(self.above(a))
        t = int(out.argmax(1))
        da, = torch.autograd.grad(out[0, t], a)
        with torch.no_grad():
            w = da.mean((2, 3), keepdim=True)
            lm = torch.relu((w * a).sum(1, keepdim=True))
            up = F.interpolate(lm, size=(self.h, self.w), mode="bilinear", align_corners=False)
        return up[0], t

    def guided_gradcam(self):
        cam, t = self.gradcam()
        x = self.x.clone().requires_grad_(True)
        out = self.guided(x)
        g, = torch.autograd.grad(out[0, t], x)
        return g[0] * cam, t

    @staticmethod
    def starts(side, win, stride):
        s = list(range(0, side - win + 1, stride))
        if s[-1] + win < side:
            s.append(side - win)
        return s

    def occlusion(self, window=4, stride=2):
        t, _ = self.target()
        ys, xs = self.starts(self.h, window, stride), self.starts(self.w, window, stride)
        rows = torch.zeros(len(ys), self.h, dtype=torch.bool)
        cols = torch.zeros(len(xs), self.w, dtype=torch.bool)
        for i, y in enumerate(ys):
            rows[i, y:y + window] = True
        for i, x in enumerate(xs):
            cols[i, x:x + window] = True
        masks = (rows[:, None, :, None] & cols[None, :, None, :]).reshape(-1, 1, self.h, self.w)
        n = masks.shape[0]
        diffs = torch.empty(n)
        # As the daemon batches them: x itself first in every batch, then chunk - 1 windows, so each window
        # is compared with score(x) from the same pass.
        per = self.chunk - 1 if self.chunk > 1 else 1
        with torch.no_grad():
            for b in range(0, n, per):
                m = masks[b:b + per]
                xs = torch.cat([self.x, torch.where(m, self.x0, self.x)])
                s = torch.cat([self.model(part)[:, t] for part in xs.split(self.chunk)])
                diffs[b:b + m.shape[0]] = s[0] - s[1:]
        mf = masks.to(torch.float32)
        total = (diffs.view(-1, 1, 1, 1) * mf).sum(0)
        count = mf.sum(0)
        attr = torch.where(count > 0, total / count.clamp(min=1), torch.zeros(()))
        return attr.expand(self.c, self.h, self.w), t

    def run(self, method):
        return getattr(self, method)()

    def measure(self, method):
        t = time.perf_counter()
        self.run(method)
        return time.perf_counter() - t


def eager_worker(model_dir, chunk):
    """The eager side: one JSON request a line on stdin, one JSON answer a line on stdout."""
    imports()
    images, _ = fx.test_set()
    ea = Eager(model_dir, images[0], chunk)
    out = sys.stdout
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "time":
            ans = {"s": ea.measure(req["method"])}
        elif req["cmd"] == "run":
            a, t = ea.run(req["method"])
            ans = {"attribution": a.detach().tolist(), "target": t}
        else:
            ans = {"torch": torch.__version__, "threads": torch.get_num_threads(), "layer": ea.layer,
                   "blas": os.environ.get("OPENBLAS_NUM_THREADS"), "nice": os.nice(0)}
        out.write(json.dumps(ans) + "\n")
        out.flush()


class EagerSide:
    """The worker process, started with one BLAS thread, the daemon's heap settings and niceness."""

    def __init__(self, model_dir, chunk, malloc, nice):
        env = dict(os.environ)
        env.update({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
        for k in DAEMON_MALLOC:
            env.pop(k, None)
        if malloc == "same":
            env.update(DAEMON_MALLOC)
        self.p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--eager-worker", model_dir, str(chunk)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
                                  preexec_fn=(lambda: os.nice(nice)) if nice else None)
        self.info = self.ask({"cmd": "info"})

    def ask(self, req):
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError("the eager worker exited %s" % self.p.wait())
        return json.loads(line)

    def measure(self, method):
        return self.ask({"cmd": "time", "method": method})["s"]

    def run(self, method):
        ans = self.ask({"cmd": "run", "method": method})
        return np.asarray(ans["attribution"], dtype=np.float32), ans["target"]

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=60)


def agreement(method, doc, eager):
    """Eager's attribution against Loupe's JSON answer: max |a - r| / max |r| (None for SmoothGrad)."""
    r, t = eager.run(method)
    if doc["target"]["index"] != t:
        raise RuntimeError("%s: Loupe's target %d, eager's %d" % (method, doc["target"]["index"], t))
    if method == "smoothgrad":
        return None
    if method == "saliency":  # the [0,1] map: |gradient| over channels, divided by gradient_at_top, clipped
        a = np.asarray(doc["saliency"], dtype=np.float32)
        r = np.minimum(np.abs(r).sum(0) / doc["gradient_at_top"], 1)
    else:
        a = np.asarray(doc["attribution"], dtype=np.float32)
        r = r.reshape(a.shape)
    return float(np.abs(a - r).max() / max(float(np.abs(r).max()), 1e-30))


# ==== The run ====

def run(args, lo, ea):
    names = [m for m, _, _ in METHODS]
    single = {m: s for m, _, s in METHODS}
    res = {m: {"http": [], "infer": [], "total": [], "eager": []} for m in names}
    check = {}
    for m in names:  # warm both sides up, and check that they compute the same thing
        rt, inf, doc = lo.measure(m)
        check[m] = agreement(m, doc, ea)
    for rnd in range(args.warmup + args.repeats):
        timed = rnd >= args.warmup
        order = names if rnd % 2 == 0 else names[::-1]
        for m in order:
            for i in range(SINGLE_PER_ROUND if single[m] else 1):
                loupe_first = (rnd + i) % 2 == 0
                if not loupe_first:
                    e = ea.measure(m)
                rt, inf, doc = lo.measure(m)
                if loupe_first:
                    e = ea.measure(m)
                if timed:
                    res[m]["http"].append(rt)
                    res[m]["infer"].append(inf)
                    res[m]["total"].append(doc["timing_ms"]["total"] / 1e3)
                    res[m]["eager"].append(e)
        print("round %d/%d done" % (rnd + 1, args.warmup + args.repeats), file=sys.stderr)
    return res, check


def summarise(res, check):
    rows = []
    for m, route, is_single in METHODS:
        h, i, e = (statistics.median(res[m][k]) * 1e3 for k in ("http", "infer", "eager"))
        target_ratio = SINGLE_RATIO if is_single else BATCHED_RATIO
        abs_t = ABS_TARGET_MS.get(m)
        rows.append({"method": m, "route": route, "single_pass": is_single, "n": len(res[m]["infer"]),
                     "loupe_inference_ms": i, "loupe_http_png_ms": h, "eager_ms": e,
                     "loupe_json_total_ms": statistics.median(res[m]["total"]) * 1e3,
                     "ratio_eager_over_inference": e / i, "ratio_eager_over_http": e / h,
                     "target_ratio": target_ratio, "target_ms": abs_t,
                     "ratio_met_inference": e / i >= target_ratio, "ratio_met_http": e / h >= target_ratio,
                     "ms_met_inference": None if abs_t is None else i < abs_t,
                     "ms_met_http": None if abs_t is None else h < abs_t,
                     "loupe_inference_ms_p10_p90": [q * 1e3 for q in quantiles(res[m]["infer"])],
                     "eager_ms_p10_p90": [q * 1e3 for q in quantiles(res[m]["eager"])],
                     "agreement_max_rel_diff": check[m]})
    return rows


def quantiles(xs):
    if len(xs) < 2:
        return [xs[0], xs[0]]
    q = statistics.quantiles(xs, n=10, method="inclusive")
    return [q[0], q[-1]]


def yes_no(v):
    return "-" if v is None else "yes" if v else "**no**"


def table(rows):
    out = ["| method | Loupe inference ms | Loupe HTTP (PNG) ms | eager ms | eager / Loupe inference | "
           "eager / Loupe HTTP | target ratio | met (inference / HTTP) | target ms | met (inference / HTTP) |",
           "|---|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in rows:
        out.append("| %s | %.2f | %.2f | %.2f | %.2fx | %.2fx | >= %.1fx | %s / %s | %s | %s |" % (
            LABELS[r["method"]], r["loupe_inference_ms"], r["loupe_http_png_ms"], r["eager_ms"],
            r["ratio_eager_over_inference"], r["ratio_eager_over_http"], r["target_ratio"],
            yes_no(r["ratio_met_inference"]), yes_no(r["ratio_met_http"]),
            "< %g" % r["target_ms"] if r["target_ms"] else "-",
            "-" if r["target_ms"] is None else "%s / %s" % (yes_no(r["ms_met_inference"]), yes_no(r["ms_met_http"]))))
    return "\n".join(out)


def table_p10(rows):
    """The lower decile: the calls least disturbed by other load on a shared machine."""
    out = ["| method | Loupe inference p10 ms | eager p10 ms | eager / Loupe | target ratio, met | target ms, met |",
           "|---|---:|---:|---:|---|---|"]
    for r in rows:
        lo, ea = r["loupe_inference_ms_p10_p90"][0], r["eager_ms_p10_p90"][0]
        out.append("| %s | %.2f | %.2f | %.2fx | >= %.1fx: %s | %s |" % (
            LABELS[r["method"]], lo, ea, ea / lo, r["target_ratio"], yes_no(ea / lo >= r["target_ratio"]),
            "-" if r["target_ms"] is None else "< %g: %s" % (r["target_ms"], yes_no(lo < r["target_ms"]))))
    return "\n".join(out)


def main():
    args = parse_args()
    if args.eager_worker:
        eager_worker(args.eager_worker[0], int(args.eager_worker[1]))
        return
    t_start = time.time()
    load_start = os.getloadavg()
    cpu = cpu_info()
    tmp = tempfile.mkdtemp(prefix="loupe-explain-bench-")
    try:
        src = args.model or os.path.join(ROOT, "models", "vgg16-w25")
        trained_here = not os.path.exists(os.path.join(src, "checkpoint.pt"))
        if trained_here:
            src = os.path.join(tmp, "train", "vgg16-w25")
            print("training a one-epoch default-architecture VGG for timing ...", file=sys.stderr)
            train_quick(src)
        store = os.path.join(tmp, "store")
        os.makedirs(store)
        name = "vgg16-w25"
        os.symlink(os.path.abspath(src), os.path.join(store, name))
        images, _ = fx.test_set()
        lo = LoupeSide(args.loupe, store, name, fx.png_gray(images[0]))
        ea = None
        tree_batch = explain_batch_of_tree()
        if args.batch:
            batch, batch_from = args.batch, "--batch"
        elif tree_batch:
            batch, batch_from = tree_batch, "EXPLAIN_BATCH in core/core_explain.c"
        else:
            batch, batch_from = lo.chunk, "the warm-up's chunk in the daemon's log"
        try:
            ea = EagerSide(src, batch, args.eager_malloc, args.eager_nice)
            layer = lo.info().get("explain", {}).get("gradcam_layer")
            if layer is not None and layer != ea.info["layer"]:
                raise RuntimeError("Grad-CAM's default layer: Loupe %s, eager %d" % (layer, ea.info["layer"]))
            print("batches of %d (%s); %d rounds after %d of warm-up" % (
                batch, batch_from, args.repeats, args.warmup), file=sys.stderr)
            res, check = run(args, lo, ea)
        finally:
            lo.close()
            if ea:
                ea.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_end = os.getloadavg()
    report(args, summarise(res, check), res, {
        "cpu": cpu, "load_start": load_start, "load_end": load_end, "seconds": time.time() - t_start,
        "model": "a one-epoch model trained for timing" if trained_here else src, "batch": batch,
        "batch_from": batch_from, "warmup_chunk": lo.chunk, "daemon_load_line": lo.loaded, "daemon_args": lo.args,
        "eager": ea.info})


def report(args, rows, res, run_info):
    """The table and the machine to stdout, and to OUT.json and OUT.md."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    cpu, eager = run_info["cpu"], run_info["eager"]
    head = [
        "VGG16-BN width 0.25, 32x32 (%s); batched methods in batches of %d images (%s; the warm-up's "
        "chunk for predict: %d)" % (run_info["model"], run_info["batch"], run_info["batch_from"],
                                    run_info["warmup_chunk"]),
        "CPU: %s, %d cores, %s (flags: %s)" % (cpu["model"], cpu["cores"], cpu["isa"], " ".join(cpu["isa_flags"])),
        # The kernels both sides may use, when capped below the CPU's (e.g. AVX2 on an AVX-512 machine).
        "ISA caps: %s" % (", ".join("%s=%s" % (k, os.environ[k]) for k in CAP_VARS if os.environ.get(k))
                          or "none (each library picks the widest this CPU runs)"),
        "load average (1, 5, 15 min): %.2f %.2f %.2f at the start, %.2f %.2f %.2f at the end" % (
            run_info["load_start"] + run_info["load_end"]),
        "eager: torch %s in Python, %d torch thread, OpenBLAS %s thread, %s, nice %d" % (
            eager["torch"], eager["threads"], eager["blas"],
            "the daemon's heap settings" if args.eager_malloc == "same" else "glibc's default heap settings",
            eager["nice"]),
        "Loupe: %s serve %s (tree %s)" % (args.loupe, " ".join(run_info["daemon_args"]), git_head()),
        "%s UTC; %d rounds: %d calls per single-pass method, %d per batched; %.0f s" % (
            when, args.repeats, args.repeats * SINGLE_PER_ROUND, args.repeats, run_info["seconds"])]
    tab = table(rows)
    tab10 = table_p10(rows)
    agree = "Eager against Loupe's JSON attribution, max |a - r| / max |r|: " + ", ".join(
        "%s %s" % (r["method"], "n/a (other RNG)" if r["agreement_max_rel_diff"] is None
                   else "%.1e" % r["agreement_max_rel_diff"]) for r in rows) + "."
    notes = ["Medians. Loupe inference: timing_ms.inference of a format=json answer; Loupe HTTP: the round trip of "
             "the default PNG answer; eager: the same method on the same weights in PyTorch eager, batched as the "
             "daemon batches it. Ratios above 1: Loupe faster. Targets (issue 12): single-pass methods >= 1.2x eager, "
             "batched >= 1.0x; the saliency route is held to the single-pass one.", agree]
    print("\n".join(head))
    print(tab)
    print("The lower decile of the same calls:")
    print(tab10)
    print("\n".join(notes))
    if not args.out:
        return
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump({"when": when, "cpu": cpu, "load_average_start": run_info["load_start"],
                   "load_average_end": run_info["load_end"], "eager": eager, "eager_malloc": args.eager_malloc,
                   "loupe": args.loupe, "daemon_args": run_info["daemon_args"], "tree": git_head(),
                   "batch": run_info["batch"], "batch_from": run_info["batch_from"],
                   "warmup_chunk": run_info["warmup_chunk"],
                   "daemon_load_line": run_info["daemon_load_line"], "model": run_info["model"],
                   "repeats": args.repeats, "single_pass_calls_per_round": SINGLE_PER_ROUND, "rows": rows,
                   "samples_s": res}, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write("# Explanation methods: Loupe against PyTorch eager\n\n")
        f.write("```sh\n/usr/bin/python3 bench/explain_latency.py %s\n```\n\n" % " ".join(sys.argv[1:]))
        f.write("".join("- %s\n" % line for line in head) + "\n" + tab + "\n\n")
        f.write("The lower decile (p10) of the same calls, those least disturbed by other load:\n\n" + tab10 + "\n\n")
        f.write("".join("%s\n\n" % n for n in notes))
    print("wrote %s.json and %s.md" % (args.out, args.out), file=sys.stderr)


if __name__ == "__main__":
    main()
