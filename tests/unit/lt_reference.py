#!/usr/bin/env python3
"""Make a tiny TorchScript VGG and PyTorch reference outputs for test_lt.

Usage: lt_reference.py OUT_DIR

A VGG11 at width 1/8 with batch norm is trained for a few SGD steps on
Fashion-MNIST (so BN statistics and weights are not at their initial
values), exported with training/export_vgg.py, loaded back with
torch.jit.load, and run by PyTorch on test images. OUT_DIR gets:

  model.ts, model.json      the model as the daemon would load it
  ref.txt                   shapes and indices, one "key values..." a line
  inputs.f32                [n, C, H, W] normalised test images
  logits.f32                [n, K]
  grads.f32                 [n, C, H, W] d logit[target_i] / d input_i
  act_<l>.f32               [c, h, w] layer l of features for image 0
  viz_frames.f32            [frames, C, H, W] Adam activation maximisation
  viz_trace.f32             [iterations + 1] mean activation of the filter

All files are little-endian float32. Nothing is downloaded.
"""

import argparse
import os
import sys

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "training"))

import export_vgg  # noqa: E402
import fashion_mnist  # noqa: E402
from vgg import VGG  # noqa: E402

N_IMAGES = 4
ACT_LAYERS = [0, 4, 6, 7]
VIZ = {"layer": 4, "filter": 1, "iterations": 10, "every": 3, "lr": 0.1,
       "weight_decay": 1e-6}


def preprocess(images, mean, std):
    x = torch.from_numpy(images.copy()).float().div(255.0).unsqueeze(1)
    x = F.pad(x, (2, 2, 2, 2))
    return (x - mean) / std


def train_tiny(data_dir, steps=30, seed=3):
    torch.manual_seed(seed)
    images, labels = fashion_mnist.load(data_dir, "train")
    mean = float(images[:5000].mean() / 255.0)
    std = float(images[:5000].std() / 255.0)
    config = {"depth": 11, "width": 0.125, "batch_norm": True,
              "in_channels": 1, "num_classes": 10, "head": "compact",
              "dropout": 0.0}
    model = VGG(config, inplace=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for s in range(steps):
        sl = slice(s * 64, (s + 1) * 64)
        x = preprocess(images[sl], mean, std)
        y = torch.from_numpy(labels[sl])
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    manifest = {"name": "lt-reference", "kind": "torchscript",
                "classes": fashion_mnist.CLASSES,
                "input": {"channels": 1, "height": 32, "width": 32,
                          "mean": [mean], "std": [std], "resize": "pad"},
                "training": {"recipe": "test", "steps": steps}}
    return export_vgg.make_checkpoint(model, config, manifest), mean, std


def viz_reference(ts, start, mean, std):
    """The Adam loop the shim runs, in PyTorch, on the same TorchScript."""
    layers = list(ts.features.children())[:VIZ["layer"] + 1]
    img = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([img], lr=VIZ["lr"],
                           weight_decay=VIZ["weight_decay"])
    frames, trace = [], []

    def act(x):
        for m in layers:
            x = m(x)
        return x[:, VIZ["filter"]].mean()

    for i in range(1, VIZ["iterations"] + 1):
        opt.zero_grad()
        loss = -act(img)
        trace.append(-loss.item())
        loss.backward()
        opt.step()
        if i % VIZ["every"] == 0:
            frames.append((img.detach() * std + mean).clamp(0, 1))
    with torch.no_grad():
        trace.append(act(img).item())
    return torch.cat(frames), torch.tensor(trace)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", help="folder to write the model and "
                                   "reference files into")
    p.add_argument("--data", default=fashion_mnist.DEFAULT_DIR,
                   help="Fashion-MNIST folder (default: %(default)s)")
    args = p.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out_dir, exist_ok=True)
    ck, mean, std = train_tiny(args.data)
    export_vgg.export(ck, args.out_dir)
    ts = torch.jit.load(os.path.join(args.out_dir, "model.ts"))
    ts.eval()
    for prm in ts.parameters():
        prm.requires_grad_(False)

    test_x, _ = fashion_mnist.load(args.data, "test")
    x = preprocess(test_x[:N_IMAGES], mean, std).contiguous()
    with torch.no_grad():
        logits = ts(x)
    targets = [(3 * i + 2) % 10 for i in range(N_IMAGES)]
    grads = []
    for i, t in enumerate(targets):
        xi = x[i:i + 1].clone().requires_grad_(True)
        score = ts(xi)[0, t]
        grads.append(torch.autograd.grad(score, xi)[0])
    grads = torch.cat(grads)

    def save(name, t):
        t.detach().contiguous().numpy().astype("<f4").tofile(
            os.path.join(args.out_dir, name))

    save("inputs.f32", x)
    save("logits.f32", logits)
    save("grads.f32", grads)
    children = list(ts.features.children())
    with torch.no_grad():
        a = x[:1]
        for i, m in enumerate(children):
            a = m(a)
            if i in ACT_LAYERS:
                save("act_%d.f32" % i, a[0])
    frames, trace = viz_reference(ts, x[:1], mean, std)
    save("viz_frames.f32", frames)
    save("viz_trace.f32", trace)

    with open(os.path.join(args.out_dir, "ref.txt"), "w") as f:
        f.write("channels 1\nheight 32\nwidth 32\n")
        f.write("mean %.9g\nstd %.9g\n" % (mean, std))
        f.write("n %d\nclasses %d\n" % (N_IMAGES, logits.shape[1]))
        f.write("n_layers %d\n" % len(children))
        f.write("targets %s\n" % " ".join(map(str, targets)))
        f.write("act_layers %s\n" % " ".join(map(str, ACT_LAYERS)))
        for k in ("layer", "filter", "iterations", "every"):
            f.write("viz_%s %d\n" % (k, VIZ[k]))
        f.write("viz_lr %.9g\nviz_weight_decay %.9g\n"
                % (VIZ["lr"], VIZ["weight_decay"]))
    print("wrote %s" % args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
