#!/usr/bin/python3
"""Sanity check of Loupe's explanation methods: cascading randomisation.

Adebayo et al. (2018), "Sanity Checks for Saliency Maps": an explanation that
describes what a model learned must change when the learned weights are
destroyed. Starting from a trained model (step 0), step k re-initialises the
top k parameterised layers, output first, as the trainer initialises them, and
each method's map of every step is compared with the trained model's.

  CNN  a VGG folder with checkpoint.pt (train_vgg.py): each Conv2d with its
       BatchNorm, and each Linear, re-initialised by vgg.py's reset_parameters
       (Kaiming-normal fan_out convolutions, zero biases, unit BN weights, zero
       BN biases, N(0, 0.01^2) linear weights); the BN running statistics go
       back to a new layer's (mean 0, variance 1). Each step is exported with
       export_vgg.py.
  MLP  a folder of `loupe train-mlp` (weights.safetensors): each dense layer
       re-initialised as the C trainer's --init recorded in model.json does
       (default: He N(0, 2/in) for relu, Xavier U(-a, a), a = sqrt(6/(in+out))
       otherwise; zero biases), from numpy's generator, not the C one.

Every step is written as a model folder into one temporary store that one
`loupe serve` serves, and every method is asked of it through
POST /v1/models/{m}/explain?format=json, always for the trained model's
predicted class. The figure of merit is Spearman's rank correlation between
the unnormalised |attribution| (summed over channels) of a step and that of
the trained model, per image, summarised as mean, standard deviation and
quartiles over the images, over all pixels and over each image's garment
pixels (those not black: on Fashion-MNIST's black background, integrated
gradients and occlusion are 0 whatever the weights). A randomised map that is
constant (no ranking: a Grad-CAM map that the ReLU zeroed, say) counts as 0;
an image whose trained map is constant is left out of that method (the counts
say how often).

The same --seed gives the same images, the same re-initialised weights and the
same answers. Outputs (--out): sanity_results.json (every figure),
sanity_curves.png (correlation against step, one line per method; CNN and MLP
panels), sanity_maps_cnn.png and sanity_maps_mlp.png (one image's maps per
method at a few steps); --doc rewrites the part of a Markdown file between
<!-- sanity-check:begin --> and <!-- sanity-check:end --> with the table and
the figures (otherwise the table goes to OUT/sanity_table.md).
"""

import argparse
import concurrent.futures
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import fashion_mnist  # noqa: E402
import safetensors_np  # noqa: E402

try:
    from tqdm import tqdm
except ImportError:
    tqdm = None

CNN_METHODS = ("gradient", "input_x_gradient", "smoothgrad",
               "integrated_gradients", "guided_backprop", "gradcam",
               "guided_gradcam", "occlusion")
# An MLP has no convolutional trunk for Grad-CAM; guided backprop needs relu
# (run() drops it for another activation).
MLP_METHODS = ("gradient", "input_x_gradient", "smoothgrad",
               "integrated_gradients", "guided_backprop", "occlusion")

BEGIN = "<!-- sanity-check:begin -->"
END = "<!-- sanity-check:end -->"

LABELS = {"gradient": "Gradient", "input_x_gradient": "Input x gradient",
          "smoothgrad": "SmoothGrad", "integrated_gradients":
          "Integrated gradients", "guided_backprop": "Guided backprop",
          "gradcam": "Grad-CAM", "guided_gradcam": "Guided Grad-CAM",
          "occlusion": "Occlusion"}


class CheckError(Exception):
    """A refusal or a failure the user can act on: printed, exit status 2."""


def log(msg):
    print("sanity_check: %s" % msg, file=sys.stderr, flush=True)


# ==== Statistics ====

def rankdata(a):
    """Ranks 1..n of a flat array, ties given their average rank."""
    a = np.asarray(a, dtype=np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    first = np.r_[True, s[1:] != s[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(a)] - 1
    ranks = np.empty(len(a))
    ranks[order] = ((starts + ends) / 2.0 + 1)[group]
    return ranks


def spearman(a, b):
    """Spearman's rank correlation (Pearson's r of average ranks); NaN when
    either array is constant."""
    ra = rankdata(a)
    rb = rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    if den == 0:
        return float("nan")
    return float((ra * rb).sum() / den)


def is_constant(a):
    return bool(np.all(a == a.flat[0]))


def summarise(values):
    """mean, std, median and quartiles of a list (NaNs left out), and n."""
    v = np.asarray([x for x in values if x == x], dtype=np.float64)
    if not len(v):
        return {"mean": None, "std": None, "median": None, "q25": None,
                "q75": None, "n": 0}
    q25, med, q75 = np.percentile(v, [25, 50, 75])
    return {"mean": float(v.mean()), "std": float(v.std()),
            "median": float(med), "q25": float(q25), "q75": float(q75),
            "n": int(len(v))}


# ==== Images ====

def png_gray(img):
    """An 8-bit grayscale PNG of a [h, w] uint8 array (zlib only)."""
    h, w = img.shape

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def pick_images(data_dir, n, seed):
    """n test images chosen by seed: (indices, images [n,28,28], labels)."""
    images, labels = fashion_mnist.load(data_dir, "test")
    if not 1 <= n <= len(images):
        raise CheckError("--images must be in 1..%d" % len(images))
    idx = np.sort(np.random.default_rng(seed).choice(len(images), n,
                                                     replace=False))
    return idx, images[idx], labels[idx]


# ==== The randomisation cascades ====

def load_json(path):
    with open(path) as f:
        return json.load(f)


def cnn_layers(model):
    """The parameterised layers of a VGG, output first: [(name, modules)],
    a Conv2d with the BatchNorm2d that follows it, or a Linear."""
    from torch import nn
    layers = []
    feats = list(model.features)
    for i, m in enumerate(feats):
        if isinstance(m, nn.Conv2d):
            group = [m]
            if i + 1 < len(feats) and isinstance(feats[i + 1], nn.BatchNorm2d):
                group.append(feats[i + 1])
            layers.append(("features.%d" % i, group))
    for i, m in enumerate(model.classifier):
        if isinstance(m, nn.Linear):
            layers.append(("classifier.%d" % i, [m]))
    return layers[::-1]


def write_cnn_steps(folder, store, seed, prefix="cnn"):
    """Export the trained VGG of folder/checkpoint.pt and every step of its
    cascade into store/PREFIX-NN. Returns (names, step rows, manifest)."""
    import torch
    from torch import nn
    import export_vgg
    from vgg import VGG

    path = os.path.join(folder, "checkpoint.pt")
    if not os.path.isfile(path):
        raise CheckError("%s: no checkpoint.pt (a folder written by "
                         "train_vgg.py or `loupe train-vgg`)" % folder)
    try:
        ck = export_vgg.load_checkpoint(path)
    except ValueError as e:
        raise CheckError(str(e))
    config = export_vgg.config_of(ck)
    manifest = export_vgg.manifest_of(ck)
    model = export_vgg.build(ck)
    layers = cnn_layers(model)
    torch.manual_seed(seed)
    names, steps = [], []
    for k in range(len(layers) + 1):
        if k:
            mods = layers[k - 1][1]
            # The trainer's own rule, applied to these modules only.
            VGG.reset_parameters(nn.ModuleList(mods))
            for m in mods:
                if isinstance(m, nn.BatchNorm2d):
                    m.reset_running_stats()
        name = "%s-%02d" % (prefix, k)
        ck_k = export_vgg.make_checkpoint(model, config, manifest)
        out = os.path.join(store, name)
        os.makedirs(out)
        export_vgg.export(ck_k, out, name=name)
        names.append(name)
        steps.append({"step": k, "randomised": layers[k - 1][0] if k else None,
                      "layers": [layers[j][0] for j in range(k)]})
    return names, steps, manifest


def mlp_init(rng, init, activation, n_out, n_in):
    """A weight [n_out, n_in] drawn as mlp_init_weights does (mlp/mlp.h)."""
    if init == "default":
        init = "he" if activation == "relu" else "xavier"
    if init == "he":
        return rng.normal(0.0, np.sqrt(2.0 / n_in), (n_out, n_in))
    if init == "xavier":
        a = np.sqrt(6.0 / (n_in + n_out))
        return rng.uniform(-a, a, (n_out, n_in))
    if init == "normal":
        return rng.normal(0.0, 0.01, (n_out, n_in))
    if init == "uniform":
        return rng.uniform(-0.05, 0.05, (n_out, n_in))
    if init == "zero":
        return np.zeros((n_out, n_in))
    raise CheckError("unknown MLP init %r in model.json" % init)


def write_mlp_steps(folder, store, seed, prefix="mlp"):
    """Copy the trained MLP and every step of its cascade into
    store/PREFIX-NN. Returns (names, step rows, manifest)."""
    wpath = os.path.join(folder, "weights.safetensors")
    mpath = os.path.join(folder, "model.json")
    for p in (wpath, mpath):
        if not os.path.isfile(p):
            raise CheckError("%s: not found (a folder written by "
                             "`loupe train-mlp`)" % p)
    manifest = load_json(mpath)
    if manifest.get("kind") != "mlp":
        raise CheckError("%s: kind is %r, not mlp"
                         % (mpath, manifest.get("kind")))
    tensors = safetensors_np.load(wpath)
    meta = safetensors_np.metadata(wpath)
    activation = manifest.get("mlp", {}).get("activation", "relu")
    init = manifest.get("training", {}).get("init", "default")
    n_layers = len([k for k in tensors if k.endswith(".weight")])
    rng = np.random.default_rng(seed)
    names, steps = [], []
    for k in range(n_layers + 1):
        if k:
            i = n_layers - k
            w = tensors["layers.%d.weight" % i]
            tensors["layers.%d.weight" % i] = mlp_init(rng, init, activation,
                                                       *w.shape)
            tensors["layers.%d.bias" % i] = np.zeros(w.shape[0])
        name = "%s-%02d" % (prefix, k)
        out = os.path.join(store, name)
        os.makedirs(out)
        safetensors_np.save(os.path.join(out, "weights.safetensors"),
                            tensors, meta)
        m = dict(manifest, name=name)
        with open(os.path.join(out, "model.json"), "w") as f:
            json.dump(m, f, indent=1)
        names.append(name)
        layers = ["layers.%d" % (n_layers - j) for j in range(1, k + 1)]
        steps.append({"step": k, "randomised": layers[-1] if k else None,
                      "layers": layers})
    return names, steps, manifest


# ==== The daemon ====

class Daemon:
    """`loupe serve` on a free port of 127.0.0.1 over a model store."""

    def __init__(self, loupe, store, jobs, log_path):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        args = [loupe, "serve", "--models", store, "--host", "127.0.0.1",
                "--port", "0", "--expensive-concurrency", str(jobs),
                "--expensive-queue", str(max(16, 4 * jobs)),
                "--torch-threads", "1", "--drain-grace", "0",
                "--access-log", "off", "--request-timeout", "0"]
        try:
            self.proc = subprocess.Popen(args, stdout=self.log,
                                         stderr=self.log)
        except OSError as e:
            raise CheckError("cannot run %s: %s (--loupe names the binary)"
                             % (loupe, e))
        self.port = None
        deadline = time.time() + 300
        while time.time() < deadline:
            m = re.search(r"listening on https?://\S+:(\d+) ", self.read_log())
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise CheckError("loupe serve did not start:\n" + self.read_log())

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Client:
    """One keep-alive HTTP connection per thread to the daemon."""

    def __init__(self, port):
        self.port = port
        self.local = threading.local()

    def request(self, method, path, body=None, headers=None):
        """(status, body bytes); reconnects once after a dropped connection
        (a keep-alive connection the daemon closed), waits and retries on
        429/503 as Retry-After says."""
        reconnected = False
        for _ in range(200):
            c = getattr(self.local, "conn", None)
            if c is None:
                c = self.local.conn = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=600)
            try:
                c.request(method, path, body=body, headers=headers or {})
                r = c.getresponse()
                data = r.read()
            except (http.client.HTTPException, OSError) as e:
                c.close()
                self.local.conn = None
                if reconnected:
                    raise CheckError("%s %s: %s" % (method, path, e))
                reconnected = True
                continue
            if r.status in (429, 503):
                time.sleep(min(5.0, float(r.getheader("Retry-After") or 1)))
                continue
            return r.status, data
        raise CheckError("%s %s: still refused after 200 tries" % (method,
                                                                   path))

    def json(self, method, path, body=None, headers=None):
        st, data = self.request(method, path, body, headers)
        try:
            doc = json.loads(data) if data else None
        except ValueError:
            doc = None
        return st, doc, data


def explain(client, model, method, png, target=None):
    q = "method=%s&format=json&invert=false" % method
    if target is not None:
        q += "&target=%d" % target
    st, doc, raw = client.json("POST", "/v1/models/%s/explain?%s" % (model, q),
                               png, {"Content-Type": "image/png"})
    if st != 200 or not isinstance(doc, dict):
        raise CheckError("POST /v1/models/%s/explain?%s: %d %s"
                         % (model, q, st, raw[:300].decode(errors="replace")))
    return doc


# ==== Running the cascade ====

class Family:
    """One model's cascade: its store names, steps, methods and results."""

    def __init__(self, kind, folder, names, steps, manifest, methods):
        self.kind, self.folder = kind, folder
        self.names, self.steps, self.manifest = names, steps, manifest
        self.methods = methods
        n = len(names)
        self.targets = {}        # image slot -> trained prediction index
        self.maps = {}           # (method, step, slot) -> |attribution| [H*W]
        # Per scope ("all" pixels, "garment" pixels): correlate()'s results.
        self.corr, self.constant, self.trained_constant = {}, {}, {}
        self.agree = [0] * n     # images whose step prediction = trained
        self.example = {}        # (method, step) -> normalised map
        self.timing = {m: [] for m in methods}
        self.ig_delta = [[] for _ in range(n)]  # |delta| / |score - base|


def absmap(doc, method, warnings, where):
    """sum over channels of |attribution| as float64 [H*W]. Raises
    CheckError when its shape is not the model's input size's; anything else
    odd in the answer goes into warnings."""
    a = np.asarray(doc["attribution"], dtype=np.float64)
    c, h, w = doc["channels"], doc["height"], doc["width"]
    want = (1, h, w) if method == "gradcam" else (c, h, w)
    if a.shape != want:
        raise CheckError("%s: attribution shape %s, expected %s"
                         % (where, list(a.shape), list(want)))
    if not np.all(np.isfinite(a)):
        warnings.append("%s: non-finite attribution values" % where)
        a = np.nan_to_num(a)
    mp = np.asarray(doc.get("map", []), dtype=np.float64)
    if mp.shape != (h, w) or (mp.size and (mp.min() < 0 or mp.max() > 1)):
        warnings.append("%s: map shape %s or range outside [0, 1]"
                        % (where, list(mp.shape)))
    return np.abs(a).sum(axis=0).ravel()


def model_input(image, manifest):
    """A [28, 28] uint8 image as the model sees it in size: padded with
    black, centred, when model.json says "resize": "pad" (the VGGs' 32x32,
    as train_vgg.py pads); as it is otherwise (the MLPs' 28x28)."""
    inp = manifest.get("input", {})
    h, w = inp.get("height", image.shape[0]), inp.get("width", image.shape[1])
    if inp.get("resize") != "pad" or (h, w) == image.shape:
        return image
    py, px = h - image.shape[0], w - image.shape[1]
    return np.pad(image, ((py // 2, py - py // 2), (px // 2, px - px // 2)))


def run_family(client, fam, idx, images, pngs, jobs, example_slot, warnings,
               bar):
    """Targets from the trained model, then every (step, image, method);
    then the correlations over every pixel and over the garment's (the
    pixels that are not black in the image)."""
    trained = fam.names[0]
    masks = [model_input(im, fam.manifest).ravel() > 0 for im in images]

    first_maps = {}

    def first(slot):
        doc = explain(client, trained, "gradient", pngs[slot])
        if doc["target"]["index"] != doc["prediction"]["index"]:
            warnings.append("%s image %d: default target %d is not the "
                            "prediction %d" % (trained, idx[slot],
                                               doc["target"]["index"],
                                               doc["prediction"]["index"]))
        first_maps[slot] = absmap(doc, "gradient", warnings,
                                  "%s image %d" % (trained, idx[slot]))
        return slot, doc["target"]["index"]

    with concurrent.futures.ThreadPoolExecutor(jobs) as ex:
        for slot, t in ex.map(first, range(len(pngs))):
            fam.targets[slot] = t

    lock = threading.Lock()

    def bar_update():
        if bar is not None:
            with lock:
                bar.update(1)

    def one(step, slot, method):
        model = fam.names[step]
        doc = explain(client, model, method, pngs[slot], fam.targets[slot])
        where = "%s image %d %s" % (model, idx[slot], method)
        m = absmap(doc, method, warnings, where)
        with lock:
            if doc["target"]["index"] != fam.targets[slot]:
                warnings.append("%s: answered target %d, asked %d"
                                % (where, doc["target"]["index"],
                                   fam.targets[slot]))
            fam.maps[(method, step, slot)] = m
            if method == "gradient" and \
                    doc["prediction"]["index"] == fam.targets[slot]:
                fam.agree[step] += 1
            if slot == example_slot:
                fam.example[(method, step)] = np.asarray(doc["map"])
            t = doc.get("timing_ms", {}).get("total")
            if t is not None:
                fam.timing[method].append(float(t))
            if method == "integrated_gradients":
                gap = doc["score"] - doc.get("baseline_score", 0.0)
                d = doc.get("convergence_delta")
                if d is not None and gap != 0:
                    fam.ig_delta[step].append(abs(d) / abs(gap))
        bar_update()

    work = [(s, i, m) for s in range(len(fam.names))
            for i in range(len(pngs)) for m in fam.methods]
    with concurrent.futures.ThreadPoolExecutor(jobs) as ex:
        futs = [ex.submit(one, *w) for w in work]
        for f in concurrent.futures.as_completed(futs):
            if f.exception() is not None:
                for g in futs:
                    g.cancel()
                raise f.exception()
    # The same request twice (the target's own and step 0's): the same bits.
    for slot, m in first_maps.items():
        if not np.array_equal(m, fam.maps[("gradient", 0, slot)]):
            warnings.append("%s image %d gradient: two answers to the same "
                            "request differ" % (trained, idx[slot]))

    for scope, mask in (("all", None), ("garment", masks)):
        fam.corr[scope], fam.constant[scope], fam.trained_constant[scope] = \
            correlate(fam, len(pngs), mask)


def correlate(fam, n_images, masks=None):
    """Spearman of every step's map with the trained one, per method and
    step: (lists of values, constant-map counts, images left out), over
    every pixel or, with masks, over each image's mask."""
    corr = {m: [[] for _ in fam.names] for m in fam.methods}
    constant = {m: [0] * len(fam.names) for m in fam.methods}
    left_out = {m: 0 for m in fam.methods}
    for m in fam.methods:
        for slot in range(n_images):
            sel = slice(None) if masks is None else masks[slot]
            ref = fam.maps[(m, 0, slot)][sel]
            if ref.size < 2 or is_constant(ref):
                left_out[m] += 1
                continue
            for step in range(len(fam.names)):
                mp = fam.maps[(m, step, slot)][sel]
                if is_constant(mp):
                    constant[m][step] += 1
                    corr[m][step].append(0.0)
                else:
                    corr[m][step].append(spearman(ref, mp))
    return corr, constant, left_out


def family_result(fam, n_images):
    methods = {}
    for m in fam.methods:
        t = fam.timing[m]
        methods[m] = {"server_ms_median": float(np.median(t)) if t else None}
        for scope, key in (("all", "steps"), ("garment", "garment_steps")):
            rows = [summarise(fam.corr[scope][m][s])
                    for s in range(len(fam.names))]
            for s, r in enumerate(rows):
                r["constant_maps"] = fam.constant[scope][m][s]
                # Per image, in the order of the images that were not
                # left out (trained_map_constant).
                r["values"] = [round(v, 4) for v in fam.corr[scope][m][s]]
            methods[m][key] = rows
            methods[m]["trained_map_constant" + ("" if scope == "all" else
                                                 "_garment")] = \
                fam.trained_constant[scope][m]
    steps = []
    for s, row in enumerate(fam.steps):
        r = dict(row)
        r["model"] = fam.names[s]
        r["agreement"] = fam.agree[s] / n_images
        d = fam.ig_delta[s]
        r["ig_relative_delta_median"] = float(np.median(d)) if d else None
        steps.append(r)
    metrics = os.path.join(fam.folder, "metrics.json")
    acc = None
    if os.path.isfile(metrics):
        acc = load_json(metrics).get("test_accuracy")
    t = fam.manifest.get("training", {})
    return {"folder": fam.folder,
            "name": fam.manifest.get("name"),
            "test_accuracy": acc, "training": t, "steps": steps,
            "methods": methods}


# ==== Output ====

def short(layer):
    if layer is None:
        return "trained"
    return layer.replace("features.", "f").replace("classifier.", "c") \
        .replace("layers.", "L")


def table(res):
    """The Markdown table of one family: a row per step, a column per
    method, each cell the mean (standard deviation) over the images."""
    methods = list(res["methods"])
    head = "| step | re-initialised down to | agree |" + "".join(
        " %s |" % LABELS[m] for m in methods)
    sep = "|---:|---|---:|" + "---:|" * len(methods)
    lines = [head, sep]
    for s, row in enumerate(res["steps"]):
        cells = []
        for m in methods:
            r = res["methods"][m]["steps"][s]
            if r["mean"] is None:
                cells.append(" - |")
            else:
                extra = "*" if r["constant_maps"] else ""
                # + 0.0: no "-0.00" for a mean that rounds to zero.
                cells.append(" %.2f (%.2f)%s |" % (round(r["mean"], 2) + 0.0,
                                                   r["std"], extra))
        lines.append("| %d | %s | %.0f%% |" % (
            s, "(trained)" if not s else "`%s`" % row["randomised"],
            100 * row["agreement"]) + "".join(cells))
    return "\n".join(lines)


def summary_table(res):
    """A row per method: the correlation (mean over the images) with only
    the output layer re-initialised and with every layer, over all pixels
    and over the garment's pixels only."""
    last = len(res["steps"]) - 1
    lines = ["| method | output layer re-initialised | same, garment pixels "
             "| all %d layers | same, garment pixels |" % last,
             "|---|---:|---:|---:|---:|"]

    def cell(rows, s):
        r = rows[s]
        return " - " if r["mean"] is None else " %.2f " % (
            round(r["mean"], 2) + 0.0)
    for m, v in res["methods"].items():
        lines.append("| %s |%s|%s|%s|%s|" % (
            LABELS[m], cell(v["steps"], 1), cell(v["garment_steps"], 1),
            cell(v["steps"], last), cell(v["garment_steps"], last)))
    return "\n".join(lines)


def plot_curves(results, path):
    """Correlation against step, a line per method: a column per model, a
    row per pixel set (all, the garment's)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kinds = [k for k in ("cnn", "mlp") if k in results]
    scopes = (("steps", "all pixels"), ("garment_steps", "garment pixels"))
    fig, axes = plt.subplots(2, len(kinds), figsize=(7 * len(kinds), 9),
                             squeeze=False)
    cmap = plt.get_cmap("tab10")
    for row, (key, what) in enumerate(scopes):
        for ax, kind in zip(axes[row], kinds):
            res = results[kind]
            x = np.arange(len(res["steps"]))
            low = -0.3
            for i, m in enumerate(CNN_METHODS):
                if m not in res["methods"]:
                    continue
                rows = res["methods"][m][key]

                def col(k):
                    return np.array([np.nan if r[k] is None else r[k]
                                     for r in rows])
                ax.plot(x, col("mean"), marker="o", ms=3, color=cmap(i),
                        label=LABELS[m])
                ax.fill_between(x, col("q25"), col("q75"), color=cmap(i),
                                alpha=0.12, lw=0)
                low = min([low] + [r["q25"] - 0.05 for r in rows
                                   if r["q25"] is not None])
            ax.set_xticks(x)
            ax.set_xticklabels([short(r["randomised"]) for r in res["steps"]],
                               rotation=60, fontsize=8)
            ax.axhline(0, color="0.6", lw=0.8)
            ax.set_ylim(low, 1.05)
            ax.set_xlabel("re-initialised down to (cascading, output first; "
                          "fN features.N, cN classifier.N, LN layers.N)",
                          fontsize=9)
            ax.set_ylabel("Spearman correlation with the trained map")
            ax.set_title("%s %s, %s, %d images: mean, band = quartiles"
                         % (kind.upper(), res["name"], what, res["images"]),
                         fontsize=10)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_maps(fam, image, path):
    """The example image's normalised maps: a row per method, a column per
    chosen step, the input first. One mosaic in one axes (dozens of axes
    take matplotlib seconds)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    image = model_input(image, fam.manifest)
    h, w = image.shape
    n = len(fam.names)
    cols = sorted(set(int(round(v)) for v in np.linspace(0, n - 1, min(n, 6))))
    rows = fam.methods
    gap = max(2, h // 8)
    mosaic = np.ones(((h + gap) * len(rows) - gap,
                      (w + gap) * (len(cols) + 1) - gap, 3))
    gray = plt.get_cmap("gray")(image / 255.0)[..., :3]
    heat = plt.get_cmap("inferno")
    for r, m in enumerate(rows):
        y = r * (h + gap)
        mosaic[y:y + h, :w] = gray
        for c, s in enumerate(cols):
            mp = fam.example.get((m, s))
            if mp is not None and mp.shape == (h, w):
                x = (c + 1) * (w + gap)
                mosaic[y:y + h, x:x + w] = heat(np.clip(mp, 0, 1))[..., :3]
    scale = 1.3 / h  # inches per pixel: a tile is 1.3 inches
    left, top = 1.3, 0.55
    fig = plt.figure(figsize=(mosaic.shape[1] * scale + left + 0.1,
                              mosaic.shape[0] * scale + top + 0.1))
    fw, fh = fig.get_size_inches()
    ax = fig.add_axes([left / fw, 0.1 / fh, mosaic.shape[1] * scale / fw,
                       mosaic.shape[0] * scale / fh])
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([(c + 0.5) * (w + gap) - gap / 2
                   for c in range(len(cols) + 1)])
    ax.set_xticklabels(["input"] + [fam.steps[s]["randomised"] or "trained"
                                    for s in cols], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks([(r + 0.5) * (h + gap) - gap / 2 for r in range(len(rows))])
    ax.set_yticklabels([LABELS[m] for m in rows], fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.suptitle("%s: one test image's maps as the layers are re-initialised"
                 " (output first)" % fam.kind.upper(), fontsize=9,
                 y=1 - 0.08 / fh, va="top")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def generated_section(report, doc_dir, out_dir, figures=True):
    """The Markdown between the markers: setup, tables, figures (links to
    out_dir's PNGs, relative to doc_dir, unless figures is false)."""
    def rel(name):
        return os.path.relpath(os.path.join(out_dir, name), doc_dir)
    lines = [BEGIN,
             "<!-- written by training/sanity_check.py (`make sanity`); "
             "edits here are replaced -->", ""]
    lines.append("Run of %s: %d test images (seed %d), `loupe %s`%s, %d s "
                 "on %d cores (%s)."
                 % (report["date"][:10], report["images"]["count"],
                    report["seed"], report["loupe_version"],
                    " at %s" % report["commit"] if report["commit"] else "",
                    round(report["seconds"]), report["machine"]["cores"],
                    report["machine"]["cpu"]))
    for kind in ("cnn", "mlp"):
        if kind not in report["models"]:
            continue
        res = report["models"][kind]
        acc = res["test_accuracy"]
        lines += ["", "**%s: `%s`**%s, %d steps. Cells: mean (standard "
                  "deviation) of the Spearman correlation over the images; "
                  "`agree`: images whose prediction is still the trained "
                  "model's; `*`: some maps were constant (counted as 0)."
                  % (kind.upper(), res["name"],
                     " (test accuracy %.2f%%)" % (100 * acc) if acc else "",
                     len(res["steps"]) - 1), "", table(res), "",
                  "The same over each image's garment pixels only (the pixels"
                  " that are not black), at the first and the last step:", "",
                  summary_table(res)]
    if figures:
        lines += ["", "![Spearman correlation against randomisation step]"
                  "(%s)" % rel("sanity_curves.png")]
    for kind in ("cnn", "mlp"):
        if figures and kind in report["models"]:
            lines += ["", "![%s maps as layers are re-initialised](%s)"
                      % (kind.upper(), rel("sanity_maps_%s.png" % kind))]
    if report["warnings"]:
        lines += ["", "The server's answers raised %d warnings "
                  "(sanity_results.json lists them)."
                  % len(report["warnings"])]
    lines += ["", END]
    return "\n".join(lines)


def update_doc(path, section):
    """Replace the text between the markers of path (appending the section
    when the file has no markers; creating the file when missing)."""
    text = ""
    if os.path.isfile(path):
        with open(path) as f:
            text = f.read()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = text + ("\n" if text and not text.endswith("\n") else "") + \
            section + "\n"
    tmp = path + ".tmp-%d" % os.getpid()
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def loupe_version(loupe):
    try:
        out = subprocess.run([loupe, "--version"], capture_output=True,
                             text=True, timeout=30).stdout
        return out.split("\n")[0].replace("loupe ", "").strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def source_commit():
    """The commit of the tree this script runs from ("-dirty" when it has
    changes), or None outside a git checkout (an install)."""
    try:
        r = subprocess.run(["git", "-C", HERE, "describe", "--always",
                            "--dirty", "--abbrev=7"], capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


# ==== Main ====

def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="sanity_check.py", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cnn", metavar="DIR",
                   help="trained VGG model folder with checkpoint.pt "
                        "(default: models/vgg16-w25 when it exists)")
    p.add_argument("--mlp", metavar="DIR",
                   help="trained MLP model folder (default: models/mlp-relu "
                        "when it exists)")
    p.add_argument("--images", type=int, default=50,
                   help="test images (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the image choice and of the re-initialised "
                        "weights (default: %(default)s)")
    p.add_argument("--data", default=fashion_mnist.DEFAULT_DIR,
                   help="Fashion-MNIST folder (default: %(default)s)")
    p.add_argument("--loupe", default="loupe",
                   help="the loupe binary that serves the steps (default: "
                        "%(default)s on PATH; `loupe sanity-check` passes "
                        "itself)")
    p.add_argument("--jobs", type=int, default=2,
                   help="requests in flight, and heavy-lane workers of the "
                        "daemon, each with one libtorch thread (default: "
                        "%(default)s)")
    p.add_argument("--out", default="sanity-check",
                   help="folder for sanity_results.json and the figures "
                        "(default: %(default)s)")
    p.add_argument("--doc", metavar="FILE",
                   help="Markdown file whose part between the sanity-check "
                        "markers is replaced by the table and figures "
                        "(default: none; the table goes to "
                        "OUT/sanity_table.md)")
    p.add_argument("--keep-store", metavar="DIR",
                   help="write the steps' model folders into DIR (which must "
                        "not exist) and keep them (default: a temporary "
                        "folder, removed)")
    p.add_argument("--example-image", type=int, default=0,
                   help="which chosen image (0-based) the example-map "
                        "figures show (default: %(default)s)")
    p.add_argument("--no-figures", action="store_true",
                   help="write only sanity_results.json (and the table)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.cnn is None and os.path.isfile("models/vgg16-w25/checkpoint.pt"):
        args.cnn = "models/vgg16-w25"
    if args.mlp is None and os.path.isfile(
            "models/mlp-relu/weights.safetensors"):
        args.mlp = "models/mlp-relu"
    if not args.cnn and not args.mlp:
        p.error("no model: give --cnn DIR and/or --mlp DIR")
    if args.jobs < 1:
        p.error("--jobs must be at least 1")
    if args.images < 1:
        p.error("--images must be at least 1")
    if not 0 <= args.example_image < args.images:
        p.error("--example-image must be in 0..images-1")
    return args


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    try:
        return run(args, t0)
    except CheckError as e:
        print("sanity_check.py: error: %s" % e, file=sys.stderr)
        return 2


def run(args, t0):
    idx, images, labels = pick_images(args.data, args.images, args.seed)
    pngs = [png_gray(np.ascontiguousarray(im)) for im in images]
    if args.keep_store:
        if os.path.exists(args.keep_store):
            raise CheckError("--keep-store %s exists" % args.keep_store)
        store = args.keep_store
        os.makedirs(store)
    else:
        store = tempfile.mkdtemp(prefix="loupe-sanity-")
    warnings = []
    families = []
    daemon = None
    try:
        if args.cnn:
            log("exporting the CNN's cascade (%s)" % args.cnn)
            names, steps, man = write_cnn_steps(args.cnn, store, args.seed)
            families.append(Family("cnn", args.cnn, names, steps, man,
                                   CNN_METHODS))
        if args.mlp:
            log("writing the MLP's cascade (%s)" % args.mlp)
            names, steps, man = write_mlp_steps(args.mlp, store, args.seed)
            methods = MLP_METHODS
            if man.get("mlp", {}).get("activation") != "relu":
                methods = tuple(m for m in methods if m != "guided_backprop")
            families.append(Family("mlp", args.mlp, names, steps, man,
                                   methods))
        log("serving %d models from %s (written in %.0f s)"
            % (sum(len(f.names) for f in families), store, time.time() - t0))
        daemon = Daemon(args.loupe, store, args.jobs,
                        os.path.join(store, ".serve.log"))
        client = Client(daemon.port)
        log("daemon ready after %.0f s" % (time.time() - t0))
        st, doc, _ = client.json("GET", "/v1/models")
        served = set()
        if st == 200 and isinstance(doc, dict):
            served = {m.get("name") for m in doc.get("models", [])}
        missing = [n for f in families for n in f.names if n not in served]
        if missing:
            raise CheckError("the daemon does not serve %s:\n%s"
                             % (", ".join(missing), daemon.read_log()[-3000:]))
        total = sum(len(f.names) * len(f.methods) * len(pngs)
                    for f in families)
        t1 = time.time()
        bar = None
        if tqdm is not None and not args.quiet:
            bar = tqdm(total=total, desc="explain", unit="req",
                       file=sys.stderr)
        for fam in families:
            run_family(client, fam, idx, images, pngs, args.jobs,
                       args.example_image, warnings, bar)
        if bar is not None:
            bar.close()
        log("%d requests in %.0f s" % (total + len(pngs) * len(families),
                                       time.time() - t1))
    finally:
        if daemon is not None:
            daemon.stop()
        if not args.keep_store:
            shutil.rmtree(store, ignore_errors=True)

    report = {
        "what": "cascading randomisation (Adebayo et al. 2018): Spearman "
                "rank correlation of sum over channels of |attribution| "
                "with the trained model's, per step",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "seed": args.seed,
        "loupe_version": loupe_version(args.loupe),
        "commit": source_commit(),
        "machine": {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0))},
        "images": {"count": len(idx), "data": args.data,
                   "test_indices": [int(i) for i in idx],
                   "labels": [int(y) for y in labels]},
        "models": {},
        "warnings": warnings,
    }
    for fam in families:
        r = family_result(fam, len(idx))
        r["images"] = len(idx)
        r["targets"] = [fam.targets[s] for s in range(len(idx))]
        report["models"][fam.kind] = r
    report["seconds"] = time.time() - t0

    os.makedirs(args.out, exist_ok=True)
    t2 = time.time()
    if not args.no_figures:
        plot_curves(report["models"], os.path.join(args.out,
                                                   "sanity_curves.png"))
        for fam in families:
            plot_maps(fam, images[args.example_image],
                      os.path.join(args.out, "sanity_maps_%s.png" % fam.kind))
        log("figures in %.0f s" % (time.time() - t2))
    report["seconds"] = time.time() - t0
    text = json.dumps(report, indent=1)
    # Lists of numbers on one line each: the per-image values would take
    # a line a number.
    text = re.sub(r"\[\s*(-?[0-9][-0-9.e,\s]*?)\s*\]",
                  lambda m: "[" + ", ".join(re.split(r",\s*", m.group(1)))
                  + "]", text)
    with open(os.path.join(args.out, "sanity_results.json"), "w") as f:
        f.write(text + "\n")
    if args.doc:
        update_doc(args.doc, generated_section(
            report, os.path.dirname(os.path.abspath(args.doc)),
            os.path.abspath(args.out), not args.no_figures))
    else:
        with open(os.path.join(args.out, "sanity_table.md"), "w") as f:
            f.write(generated_section(report, os.path.abspath(args.out),
                                      os.path.abspath(args.out),
                                      not args.no_figures) + "\n")
    for kind, res in report["models"].items():
        print("%s (%s)\n%s\n" % (kind.upper(), res["name"], table(res)))
    for w in warnings[:20]:
        log("warning: " + w)
    if len(warnings) > 20:
        log("... %d warnings in all (sanity_results.json)" % len(warnings))
    log("done in %.0f s: %s" % (report["seconds"], args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
