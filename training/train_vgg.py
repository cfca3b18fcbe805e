#!/usr/bin/env python3
"""Train a VGG on Fashion-MNIST and write a Loupe model folder.

Recipes
-------
default
    VGG16 with batch norm at width 0.25 (0.92M parameters) on 32x32 inputs
    (the 28x28 images padded with 2 black pixels a side, as the daemon's
    "resize": "pad" does). Augmentation: random shifts of up to 2 pixels and
    horizontal flips (clothes are left-right symmetric; 2 pixels, not the usual
    4, because a short schedule cannot afford much harder examples). SGD with
    Nesterov momentum 0.9, weight decay 5e-4 on weights only (not BN or
    biases), batch 128, label smoothing 0.1, and a one-cycle schedule (linear
    warm-up from lr/25 to 0.1 over the first 15%% of the steps, cosine down to
    lr/1e4): one cycle reaches a given accuracy in fewer epochs than a step
    schedule, and the annealed end is what makes a short run's last epoch its
    best. Channels-last tensors make the convolutions about 2x faster on CPU
    (oneDNN). On CPU the schedule runs 24 epochs or 18 minutes, whichever
    comes first (on a 2-core AVX-512 CPU the epochs end it, about 30 s each;
    on a 2-core AVX2 CPU, about 60 s each, the clock does, after ~17 epochs),
    aiming at 93.5%% test accuracy within 20 minutes on either; --epochs alone
    makes it step-driven, --budget-minutes alone time-driven. Either way it
    ends annealed.
seed
    The seed report's method: torchvision's VGG16 layout without batch norm,
    ImageNet weights from --pretrained FILE (a state_dict you bring; nothing is
    ever downloaded), features frozen, the last classifier layer replaced by 10
    outputs, images resized to 256, centre-cropped to 224, repeated to 3
    channels and normalised with ImageNet's mean/std, Adam lr 1e-3, batch 100,
    80:20 train/validation split, 10 epochs. Needs a GPU in practice: about 4
    hours an epoch on 2 CPU cores.

Outputs (in --out, written by rank 0 only): model.json, model.ts (TorchScript
exported by this torch), checkpoint.pt (state_dict + config), history.json,
metrics.json, written whole or not at all: into a hidden .NAME.tmp-PID folder
beside --out that then replaces it in one rename (docs/model-folder.md). See
docs/vgg.md.

Distributed: under torchrun the env:// variables are used; --nproc N starts N
local processes itself (gloo on CPU, NCCL on GPU). --batch-size is global.
"""

import argparse
import dataclasses
import io
import math
import os
import socket
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

try:
    from tqdm import tqdm
except ImportError:  # the GPU box may lack tqdm: progress is optional there
    tqdm = None

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import export_vgg  # noqa: E402
import fashion_mnist  # noqa: E402
import model_folder  # noqa: E402
import train_status  # noqa: E402
from vgg import CFGS, HEADS, VGG  # noqa: E402

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# Per-recipe defaults; an option given on the command line wins.
RECIPES = {
    "default": {
        "depth": 16, "width": 0.25, "batch_norm": True, "head": "compact",
        "dropout": 0.0, "input_size": 32, "epochs": 24, "batch_size": 128,
        "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "schedule": "onecycle", "warmup": 0.15, "label_smoothing": 0.1,
        "shift": 2, "flip": True, "erase": 0.0, "val_fraction": 0.1,
        "freeze_features": False,
    },
    "seed": {
        "depth": 16, "width": 1.0, "batch_norm": False, "head": "imagenet",
        "dropout": 0.5, "input_size": 224, "epochs": 10, "batch_size": 100,
        "optimizer": "adam", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0,
        "schedule": "constant", "warmup": 0.0, "label_smoothing": 0.0,
        "shift": 0, "flip": False, "erase": 0.0, "val_fraction": 0.2,
        "freeze_features": True,
    },
}

DOWNLOAD_WORDS = ("imagenet", "default", "download", "imagenet1k_v1",
                  "imagenet1k_v2", "true", "yes")


# The default recipe's time limit on CPU, with its 24 epochs: whichever ends
# first ends the schedule. 18 minutes of training and validation leave about a
# minute for loading, the test set and the export inside the 20 minutes the
# recipe is sized for, on CPUs whose epochs take longer than 45 s (2 AVX2 cores).
CPU_BUDGET_MINUTES = 18.0


class UsageError(Exception):
    """A bad option combination, reported as `train_vgg.py: error: ...`."""


# ==== Options ====

def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="train_vgg.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--recipe", choices=sorted(RECIPES), default="default",
      help="hyperparameter set (see below); other options override it "
           "(default: %(default)s)")
    a("--data", default=fashion_mnist.DEFAULT_DIR,
      help="folder with the four Fashion-MNIST IDX .gz files "
           "(default: %(default)s)")
    a("--out", help="model folder to write (default: models/NAME)")
    a("--name", help="model name in model.json (default: from the "
                     "architecture, e.g. vgg16-w25)")
    g = p.add_argument_group("architecture")
    g.add_argument("--depth", type=int, choices=sorted(CFGS),
                   help="VGG depth (recipe default: 16)")
    g.add_argument("--width", type=float,
                   help="channel multiplier on VGG's 64..512 channels "
                        "(default: 0.25; seed: 1)")
    g.add_argument("--batch-norm", dest="batch_norm",
                   action=argparse.BooleanOptionalAction, default=None,
                   help="batch norm after every convolution (default: on; "
                        "seed: off)")
    g.add_argument("--head", choices=HEADS,
                   help="classifier: compact (global pool + linear) or "
                        "imagenet (torchvision's 7x7 pool + 2 hidden "
                        "layers) (default: compact; seed: imagenet)")
    g.add_argument("--dropout", type=float,
                   help="dropout before the classifier's linear layers "
                        "(default: 0; seed: 0.5)")
    g.add_argument("--input-size", type=int,
                   help="model input side in pixels: 28 or more pads the "
                        "28x28 images (default: 32); seed: 224 after a "
                        "resize to 256")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int,
                   help="epochs (default: 24; seed: 10); given alone, the "
                        "schedule follows the steps and the clock is not "
                        "looked at")
    g.add_argument("--budget-minutes", type=float,
                   help="drive the schedule by elapsed time: training "
                        "stops after this many minutes, annealed; with "
                        "--epochs too, at whichever ends first (default "
                        "recipe on CPU: %g minutes or 24 epochs, whichever "
                        "first; otherwise off)" % CPU_BUDGET_MINUTES)
    g.add_argument("--batch-size", type=int,
                   help="global batch size, split across processes "
                        "(default: 128; seed: 100)")
    g.add_argument("--optimizer", choices=("sgd", "adam"),
                   help="SGD with Nesterov momentum, or Adam (default: sgd; "
                        "seed: adam)")
    g.add_argument("--lr", type=float,
                   help="peak learning rate (default: 0.1; seed: 1e-3)")
    g.add_argument("--momentum", type=float,
                   help="SGD momentum (default: 0.9)")
    g.add_argument("--weight-decay", type=float,
                   help="L2 weight decay on conv/linear weights "
                        "(default: 5e-4; seed: 0)")
    g.add_argument("--schedule", choices=("onecycle", "cosine", "constant"),
                   help="learning-rate schedule (default: onecycle; "
                        "seed: constant)")
    g.add_argument("--warmup", type=float,
                   help="one-cycle warm-up as a fraction of training "
                        "(default: 0.15)")
    g.add_argument("--label-smoothing", type=float,
                   help="cross-entropy label smoothing (default: 0.1; "
                        "seed: 0)")
    g.add_argument("--shift", type=int,
                   help="augmentation: random shift of up to this many "
                        "pixels (default: 2; seed: 0)")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction,
                   default=None,
                   help="augmentation: random horizontal flips "
                        "(default: on; seed: off)")
    g.add_argument("--erase", type=float,
                   help="augmentation: probability of blanking a random "
                        "8x8 square (cutout) (default: 0)")
    g.add_argument("--pretrained", metavar="FILE",
                   help="ImageNet vgg16 state_dict (torchvision's key names) "
                        "to start from; required by --recipe seed; never "
                        "downloaded")
    g.add_argument("--freeze-features", action=argparse.BooleanOptionalAction,
                   default=None,
                   help="train only the classifier (default: off; seed: on)")
    g = p.add_argument_group("data")
    g.add_argument("--val-fraction", type=float,
                   help="share of the official 60k training images held out "
                        "for validation (default: 0.1 = 54k/6k; seed: 0.2)")
    g.add_argument("--train-subset", type=int, default=0,
                   help="use only the first N training images after the "
                        "split, for quick runs (default: all)")
    g.add_argument("--val-subset", type=int, default=0,
                   help="use only N validation images (default: all)")
    g.add_argument("--test-subset", type=int, default=0,
                   help="evaluate on only N of the 10k test images "
                        "(default: all; metrics say how many)")
    g.add_argument("--seed", type=int, default=1,
                   help="seed of the split, initialisation and augmentation "
                        "(default: %(default)s)")
    g = p.add_argument_group("hardware")
    g.add_argument("--device", default="auto",
                   help="auto (cuda when available), cpu, cuda or cuda:N "
                        "(default: %(default)s)")
    g.add_argument("--threads", type=int, default=0,
                   help="CPU threads in all (divided among processes); "
                        "torch starts with 1 on Debian (default: the cores "
                        "this process may use)")
    g.add_argument("--nproc", type=int, default=1,
                   help="start N local DDP processes (gloo on CPU, NCCL on "
                        "GPU, one GPU each); under torchrun leave it at 1 "
                        "(default: %(default)s)")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction,
                   default=None,
                   help="mixed precision on CUDA: bfloat16 autocast where "
                        "supported, else float16 with loss scaling "
                        "(default: on for CUDA, off for CPU)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                   default=True,
                   help="NHWC tensors: faster convolutions on CPU (oneDNN) "
                        "and on tensor cores (default: on)")
    g = p.add_argument_group("output")
    g.add_argument("--export", action=argparse.BooleanOptionalAction,
                   default=True,
                   help="write model.ts and model.json with this torch; turn "
                        "off when the serving side's torch differs and run "
                        "export_vgg.py there (default: on)")
    g.add_argument("--quiet", action="store_true",
                   help="no progress bars")
    g.add_argument("--status", metavar="FILE",
                   help="keep this JSON file up to date with the epoch, "
                        "progress and estimated time left, and remove it at "
                        "the end; `loupe serve` lists "
                        "<store>/.training/*.json at GET /v1/training "
                        "(default: none)")
    args = p.parse_args(argv)
    try:
        resolve(args)
    except UsageError as e:
        p.error(str(e))
    return args


def resolve(args):
    """Fill unset options from the recipe and check the combination."""
    # Which limits the schedule follows: what was given, else both the
    # recipe's epochs and (default recipe, CPU: see setup_device) the clock.
    args.epochs_given = args.epochs is not None
    args.budget_default = (args.budget_minutes is None and
                           not args.epochs_given and
                           args.recipe == "default")
    if args.budget_minutes is not None and not args.epochs_given:
        args.epochs = 0  # time-driven only
    for k, v in RECIPES[args.recipe].items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    if args.pretrained is not None:
        low = args.pretrained.lower()
        if "://" in low or low in DOWNLOAD_WORDS:
            raise UsageError(
                "--pretrained %r looks like a download request; Loupe never "
                "downloads weights. Bring an ImageNet vgg16 state_dict file "
                "(torchvision's key names) and pass its path"
                % args.pretrained)
        if not os.path.isfile(args.pretrained):
            raise UsageError("--pretrained %s: no such file" % args.pretrained)
    if args.recipe == "seed" and args.pretrained is None:
        raise UsageError(
            "--recipe seed needs --pretrained FILE, an ImageNet vgg16 "
            "state_dict you bring: its features are frozen, and frozen "
            "random features teach nothing. Nothing can be downloaded here; "
            "use the default recipe to train from scratch")
    if args.freeze_features and args.pretrained is None:
        raise UsageError("--freeze-features without --pretrained would "
                         "train a classifier on random features")
    checks = [
        (args.width > 0, "--width must be positive"),
        (args.epochs >= 1 or (args.epochs == 0 and not args.epochs_given),
         "--epochs must be at least 1"),
        (args.batch_size >= 1, "--batch-size must be at least 1"),
        (args.lr > 0, "--lr must be positive"),
        (0 <= args.val_fraction < 1, "--val-fraction must be in [0, 1)"),
        (0 <= args.dropout < 1, "--dropout must be in [0, 1)"),
        (0 <= args.label_smoothing < 1,
         "--label-smoothing must be in [0, 1)"),
        (0 <= args.erase <= 1, "--erase must be in [0, 1]"),
        (0 <= args.warmup < 1, "--warmup must be in [0, 1)"),
        (args.shift >= 0, "--shift must be >= 0"),
        (args.nproc >= 1, "--nproc must be at least 1"),
        (args.budget_minutes is None or args.budget_minutes > 0,
         "--budget-minutes must be positive"),
        (min(args.train_subset, args.val_subset, args.test_subset) >= 0,
         "subsets must be >= 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UsageError(msg)
    if args.head == "compact" and args.input_size < 32:
        # Five 2x2 pools need 32 pixels; 28 would shrink to 0 at pool 5.
        raise UsageError("--input-size must be at least 32 for VGG's five "
                         "pools (the 28x28 images are padded)")
    if args.head == "imagenet" and not 32 <= args.input_size <= 256:
        raise UsageError("--input-size must be in [32, 256] with the "
                         "imagenet head (a crop of the 256 resize)")
    if args.name is None:
        if args.recipe == "seed":
            args.name = "vgg%d-seed" % args.depth
        else:
            args.name = "vgg%d-w%d" % (args.depth,
                                       int(round(args.width * 100)))
    if args.out is None:
        args.out = os.path.join("models", args.name)


# ==== Data ====

class Preprocess:
    """Batches of uint8 [B, 28, 28] images to normalised [B, C, S, S] floats.

    ``pad`` (default recipe): pad with black to S x S, then optional shift /
    flip / cutout augmentation, then (x - mean) / std. ``resize_crop`` (seed):
    bilinear resize to 256 (align_corners=False), centre crop S, 3 channels,
    ImageNet mean/std. ``manifest()`` is model.json's ``input``: what the
    daemon must do to an upload.
    """

    def __init__(self, args, mean, std, device):
        self.size = args.input_size
        self.seed_style = args.recipe == "seed" or args.head == "imagenet"
        self.channels = 3 if self.seed_style else 1
        self.mean = mean if not self.seed_style else IMAGENET_MEAN
        self.std = std if not self.seed_style else IMAGENET_STD
        self.resize = 256 if self.seed_style else None
        self.shift, self.flip, self.erase = args.shift, args.flip, args.erase
        self.channels_last = args.channels_last
        self.device = device
        shape = (1, self.channels, 1, 1)
        self.mean_t = torch.tensor(self.mean, device=device).view(shape)
        self.std_t = torch.tensor(self.std, device=device).view(shape)

    def manifest(self):
        m = {"channels": self.channels, "height": self.size,
             "width": self.size, "mean": self.mean, "std": self.std}
        if self.seed_style:
            m.update({"resize": "resize_crop", "resize_to": self.resize,
                      "crop": self.size, "interpolation": "bilinear",
                      "grayscale_to_rgb": True})
        else:
            m["resize"] = "pad"
        return m

    def __call__(self, images, train=False, gen=None):
        x = images.to(self.device, non_blocking=True).float().div_(255.0)
        x = x.unsqueeze(1)
        if self.seed_style:
            x = F.interpolate(x, size=(self.resize, self.resize),
                              mode="bilinear", align_corners=False)
            o = (self.resize - self.size) // 2
            x = x[:, :, o:o + self.size, o:o + self.size]
            x = x.expand(-1, self.channels, -1, -1)
        else:
            p = self.size - x.shape[-1]
            x = F.pad(x, (p // 2, p - p // 2, p // 2, p - p // 2))
            if train:
                x = self.augment(x, gen)
        x = (x - self.mean_t) / self.std_t
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        else:
            x = x.contiguous()
        return x

    def augment(self, x, gen):
        """Random shift (pad black, crop back), flip, cutout; vectorised."""
        b, _, h, w = x.shape
        dev = x.device

        def rand(*shape):
            return torch.rand(*shape, generator=gen, device=dev)

        if self.shift:
            s = self.shift
            xp = F.pad(x, (s, s, s, s))[:, 0]
            oy = (rand(b) * (2 * s + 1)).long().clamp_(max=2 * s)
            ox = (rand(b) * (2 * s + 1)).long().clamp_(max=2 * s)
            rows = oy.view(b, 1, 1) + torch.arange(h, device=dev).view(1, h, 1)
            cols = ox.view(b, 1, 1) + torch.arange(w, device=dev).view(1, 1, w)
            bidx = torch.arange(b, device=dev).view(b, 1, 1)
            x = xp[bidx, rows, cols].unsqueeze(1)
        if self.flip:
            m = (rand(b) < 0.5).view(b, 1, 1, 1)
            x = torch.where(m, x.flip(-1), x)
        if self.erase > 0:
            side = 8
            cy = (rand(b) * h).long().view(b, 1, 1)
            cx = (rand(b) * w).long().view(b, 1, 1)
            yy = torch.arange(h, device=dev).view(1, h, 1)
            xx = torch.arange(w, device=dev).view(1, 1, w)
            box = ((yy - cy).abs() < side // 2) & ((xx - cx).abs() < side // 2)
            on = (rand(b) < self.erase).view(b, 1, 1)
            x = x.masked_fill((box & on).unsqueeze(1), 0.0)
        return x


def load_data(args):
    """Train/val/test uint8 images and int64 labels, split and subset."""
    images, labels = fashion_mnist.load(args.data, "train")
    test_x, test_y = fashion_mnist.load(args.data, "test")
    tr, va = fashion_mnist.split(len(images), args.val_fraction, args.seed)
    if args.train_subset:
        tr = tr[:args.train_subset]
    if args.val_subset:
        va = va[:args.val_subset]
    if args.test_subset:
        test_x, test_y = test_x[:args.test_subset], test_y[:args.test_subset]
    t = torch.from_numpy
    return {
        "train": (t(np.ascontiguousarray(images[tr])), t(labels[tr])),
        "val": (t(np.ascontiguousarray(images[va])), t(labels[va])),
        "test": (t(test_x.copy()), t(test_y.copy())),
        "split": {"kind": "holdout", "train": int(len(tr)),
                  "val": int(len(va)),
                  "test": int(len(test_y)), "val_fraction": args.val_fraction,
                  "seed": args.seed,
                  "source": "official 60k train split seeded into "
                            "train/val; official 10k test"},
    }


def pixel_stats(images):
    """Mean and std of the training pixels in [0, 1] (the 28x28 images)."""
    x = images.double().div(255.0)
    return [round(float(x.mean()), 4)], [round(float(x.std()), 4)]


# ==== Training ====

def lr_at(args, progress):
    """Learning rate at training progress in [0, 1]."""
    peak = args.lr
    if args.schedule == "constant":
        return peak
    if args.schedule == "cosine":
        return peak * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    low, final = peak / 25.0, peak / 1e4
    if progress < args.warmup:
        return low + (peak - low) * progress / args.warmup
    q = min(1.0, (progress - args.warmup) / (1.0 - args.warmup))
    return final + (peak - final) * 0.5 * (1 + math.cos(math.pi * q))


def make_optimizer(args, model):
    """Weight decay on weights (ndim > 1) only, not on BN scales or biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    rest = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": args.weight_decay},
              {"params": rest, "weight_decay": 0.0}]
    if args.optimizer == "adam":
        return torch.optim.Adam(groups, lr=args.lr)
    return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum,
                           nesterov=args.momentum > 0)


def load_pretrained(model, path):
    """Load an ImageNet vgg16 state_dict, all but the last classifier layer."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # a torch without weights_only
        sd = torch.load(path, map_location="cpu")
    except Exception as e:
        raise UsageError("--pretrained %s: not a plain state_dict (%s)"
                         % (path, str(e).splitlines()[-1][:200]))
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise UsageError("--pretrained %s: not a state_dict" % path)
    last = "classifier.6."
    sd = {k: v for k, v in sd.items() if not k.startswith(last)}
    own = model.state_dict()
    bad = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise UsageError("--pretrained %s: shapes differ for %s (a vgg16 "
                         "without batch norm at width 1 is expected)"
                         % (path, ", ".join(bad[:4])))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith(last)]
    if missing or unexpected:
        raise UsageError("--pretrained %s: missing %s, unexpected %s"
                         % (path, missing[:4], unexpected[:4]))


class Dist:
    """Rank, world size and helpers; a single process is world size 1."""

    def __init__(self, rank=0, world=1, local_rank=0, local_world=1):
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self.local_world = local_world  # ranks on this machine
        self.on = world > 1

    def all_sum(self, t):
        if self.on:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def all_max(self, value, device):
        if not self.on:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())


def pick_device(args, d):
    if args.device == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        want = args.device
    dev = torch.device(want)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device %s: CUDA is not available" % want)
        if dev.index is None:
            dev = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(dev)
    return dev


def evaluate(model, data, pre, d, device, batch=1000):
    """Loss sum, correct count and confusion [true][pred] over this rank's
    shard of ``data``, summed over ranks."""
    images, labels = data
    idx = torch.arange(d.rank, len(labels), d.world)
    conf = torch.zeros(10, 10, dtype=torch.float64, device=device)
    loss = torch.zeros(1, dtype=torch.float64, device=device)
    model.eval()
    with torch.no_grad():
        for i in range(0, len(idx), batch):
            bi = idx[i:i + batch]
            x = pre(images[bi])
            y = labels[bi].to(device)
            out = model(x).float()
            loss += F.cross_entropy(out, y, reduction="sum").double()
            pred = out.argmax(1)
            conf.index_put_((y, pred), torch.ones_like(y, dtype=conf.dtype),
                            accumulate=True)
    d.all_sum(conf)
    d.all_sum(loss)
    n = conf.sum().item()
    return {"loss": loss.item() / max(n, 1),
            "accuracy": conf.trace().item() / max(n, 1),
            "confusion": conf.long().cpu().tolist()}


def metrics_from_confusion(conf, classes, loss):
    """metrics.json: accuracy, confusion [true][pred], per-class numbers."""
    c = np.array(conf, dtype=np.int64)
    n = int(c.sum())
    rows = c.sum(1)
    cols = c.sum(0)
    ovr = []
    for k in range(len(classes)):
        tp = int(c[k, k])
        fn = int(rows[k] - tp)
        fp = int(cols[k] - tp)
        ovr.append({"class": classes[k], "tp": tp, "fp": fp, "fn": fn,
                    "tn": n - tp - fp - fn})
    pairs = [(int(c[i, j]), i, j) for i in range(len(classes))
             for j in range(len(classes)) if i != j and c[i, j] > 0]
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    return {
        "test_accuracy": float(np.trace(c)) / max(n, 1),
        "test_loss": loss,
        "n": n,
        "classes": classes,
        "confusion": c.tolist(),
        "class_accuracy": [float(c[k, k]) / rows[k] if rows[k] else 0.0
                           for k in range(len(classes))],
        "one_vs_rest": ovr,
        "most_confused": [{"true": classes[i], "predicted": classes[j],
                           "count": cnt} for cnt, i, j in pairs[:5]],
    }


def sync_buffers(model, d):
    """Average BN running statistics over ranks. DDP broadcasts rank 0's
    buffers before each forward, so after the last step every rank holds
    its own; averaging makes them identical (and uses every rank's data)."""
    if not d.on:
        return
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                buf.div_(d.world)


def params_digest(model, d, device):
    """Largest |difference| of any parameter or buffer between rank 0 and the
    other ranks (0.0 when all ranks hold identical weights)."""
    if not d.on:
        return 0.0
    flat = torch.cat([t.detach().double().reshape(-1)
                      for t in model.state_dict().values()]).to(device)
    gathered = [torch.empty_like(flat) for _ in range(d.world)]
    dist.all_gather(gathered, flat)
    return max(float((g - gathered[0]).abs().max()) for g in gathered)


def progress_bar(iterable, total, desc, enabled):
    """A tqdm bar on a terminal; in a log the per-epoch lines suffice."""
    if not enabled or tqdm is None or not sys.stderr.isatty():
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False,
                dynamic_ncols=True)


@dataclasses.dataclass
class Engine:
    """The model and what a training step needs to update it."""

    config: dict  # the VGG's config, as the checkpoint records it
    model: nn.Module  # the VGG itself
    net: nn.Module  # model, wrapped in DDP when there are several ranks
    opt: torch.optim.Optimizer
    amp_dtype: object  # autocast dtype: torch.bfloat16, torch.float16 or None
    scaler: object  # GradScaler, enabled for float16 only


@dataclasses.dataclass
class Trained:
    """What the epoch loop leaves behind."""

    history: list  # one row per epoch, history.json's "epochs"
    epochs: int  # epochs started (the last may have been cut by the budget)
    steps: int  # optimisation steps taken
    seconds: float  # wall time of the loop


def setup_device(args, d):
    """Pick this rank's device and set its CPU threads or cuDNN autotuning."""
    device = pick_device(args, d)
    cores = args.threads or len(os.sched_getaffinity(0))
    if device.type == "cpu":
        # The cores are shared by this machine's ranks only.
        torch.set_num_threads(max(1, cores // d.local_world))
        keep_heap()
        if args.budget_default:
            args.budget_minutes = CPU_BUDGET_MINUTES
    else:
        torch.backends.cudnn.benchmark = True
    return device


def keep_heap():
    """Make glibc keep freed activations for the next step.

    A training step frees tens of megabytes of activations and allocates
    them again. With glibc's defaults, blocks above its adaptive mmap
    threshold go back to the kernel and every step page-faults them in again
    (zeroed): measured on 2 cores, a step took 2.8 to 3.6x as long
    (bench/vgg_step.py). Raising the threshold to 32 MiB (glibc's most; the
    largest activation of the default recipe is 8 MiB) and never trimming the
    heap keeps them. No-op where the C library is not glibc.
    """
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        libc.mallopt(m_mmap_threshold, 32 << 20)
        libc.mallopt(m_trim_threshold, 1 << 30)
        libc.mallopt(m_top_pad, 64 << 20)
    except (OSError, AttributeError):
        pass


def setup_amp(args, device):
    """The autocast dtype (None: float32) and a GradScaler, on for float16."""
    amp = args.amp if args.amp is not None else device.type == "cuda"
    amp_dtype = None
    if amp:
        if device.type != "cuda":
            raise UsageError("--amp needs a CUDA device")
        amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported()
                     else torch.float16)
    fp16 = amp_dtype == torch.float16
    try:  # torch >= 2.3 spells it torch.amp.GradScaler("cuda")
        scaler = torch.amp.GradScaler("cuda", enabled=fp16)
    except (AttributeError, TypeError):
        scaler = torch.cuda.amp.GradScaler(enabled=fp16)
    return amp_dtype, scaler


def prepare_data(args, device):
    """Load the split data and make the preprocessing its pixels call for."""
    data = load_data(args)
    mean, std = pixel_stats(data["train"][0])
    pre = Preprocess(args, mean, std, device)
    if device.type == "cuda":
        data = {k: (v[0].to(device), v[1].to(device)) if k != "split" else v
                for k, v in data.items()}
    return data, pre


def build_engine(args, d, device, pre, amp_dtype, scaler):
    """Build the VGG on the device, its DDP wrapper and its optimiser."""
    config = {"depth": args.depth, "width": args.width,
              "batch_norm": args.batch_norm, "in_channels": pre.channels,
              "num_classes": len(fashion_mnist.CLASSES), "head": args.head,
              "dropout": args.dropout}
    model = VGG(config, inplace=True)
    if args.pretrained:
        load_pretrained(model, args.pretrained)
    if args.freeze_features:
        for p in model.features.parameters():
            p.requires_grad_(False)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    net = model
    if d.on:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    opt = make_optimizer(args, model)
    return Engine(config, model, net, opt, amp_dtype, scaler)


def train_step(args, eng, device, x, y, lr):
    """One optimisation step on the batch (x, y) at lr; its loss and logits."""
    for g in eng.opt.param_groups:
        g["lr"] = lr
    with torch.autocast(device_type=device.type, dtype=eng.amp_dtype,
                        enabled=eng.amp_dtype is not None):
        out = eng.net(x)
        loss = F.cross_entropy(out.float(), y,
                               label_smoothing=args.label_smoothing)
    eng.opt.zero_grad(set_to_none=True)
    eng.scaler.scale(loss).backward()
    eng.scaler.step(eng.opt)
    eng.scaler.update()
    return loss, out


def epoch_line(row):
    """The line rank 0 prints for an epoch's history row."""
    val = row["val_loss"] is not None
    return ("epoch %d: train loss %.4f acc %.4f | val loss %s acc %s "
            "| %.1fs" % (row["epoch"], row["train_loss"],
                         row["train_accuracy"],
                         "%.4f" % row["val_loss"] if val else "-",
                         "%.4f" % row["val_accuracy"] if val else "-",
                         row["seconds"]))


def train_epochs(args, d, device, data, pre, eng, status=None):
    """The epoch loop, to --epochs or the end of --budget-minutes; progress
    into ``status`` (train_status.Status) when given."""
    lead = d.rank == 0
    show = lead and not args.quiet
    train_x, train_y = data["train"]
    n_train = len(train_y)
    sampler = torch.utils.data.DistributedSampler(
        range(n_train), num_replicas=d.world, rank=d.rank, shuffle=True,
        seed=args.seed, drop_last=False)
    per_rank = max(1, args.batch_size // d.world)
    per_epoch = max(1, len(sampler) // per_rank)
    # The schedule's progress is the further along of steps (with --epochs)
    # and elapsed time (with a budget); it ends at 1.
    total_steps = per_epoch * args.epochs if args.epochs else None
    budget = args.budget_minutes * 60.0 if args.budget_minutes else None
    gen = torch.Generator(device=device)
    gen.manual_seed(args.seed * 1000 + d.rank)

    history = []
    start = time.time()
    lr = lr_at(args, 0.0)
    step = 0
    done = False
    epoch = 0
    while not done:
        epoch += 1
        t0 = time.time()
        sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(sampler)), dtype=torch.long)
        eng.net.train()
        sums = torch.zeros(3, dtype=torch.float64, device=device)
        seen = 0
        bar = progress_bar(range(per_epoch), per_epoch,
                           "epoch %d" % epoch, show)
        for b in bar:
            progress = step / total_steps if total_steps else 0.0
            if budget is not None:
                progress = max(progress, d.all_max(
                    (time.time() - start) / budget, device))
            if progress >= 1.0:
                done = True
                break
            if status:
                status.update(epoch, progress,
                              epochs_done=epoch - 1 + b / per_epoch)
            lr = lr_at(args, progress)
            bi = order[b * per_rank:(b + 1) * per_rank]
            if device.type == "cuda":
                bi = bi.to(device)
            x = pre(train_x[bi], train=True, gen=gen)
            y = train_y[bi].to(device)
            loss, out = train_step(args, eng, device, x, y, lr)
            step += 1
            # Running sums stay on the device: no host sync per step.
            with torch.no_grad():
                sums[0] += loss.detach().double() * len(y)
                sums[1] += (out.argmax(1) == y).sum().double()
            seen += len(y)
            if hasattr(bar, "set_postfix") and b % 20 == 0:
                bar.set_postfix(loss="%.3f" % loss.item(), lr="%.4f" % lr)
        if total_steps and step >= total_steps:
            done = True
        sums[2] = seen
        d.all_sum(sums)
        sync_buffers(eng.model, d)
        if sums[2].item() == 0:
            break
        t_val = time.time()
        val = (evaluate(eng.net.module if d.on else eng.net, data["val"],
                        pre, d, device) if len(data["val"][1]) else None)
        if status and val:
            # The test pass scales with its images; a few seconds to export.
            status.tail_s = ((time.time() - t_val) * len(data["test"][1])
                             / max(len(data["val"][1]), 1) + 5.0)
        row = {"epoch": epoch,
               "train_loss": sums[0].item() / sums[2].item(),
               "train_accuracy": sums[1].item() / sums[2].item(),
               "val_loss": val["loss"] if val else None,
               "val_accuracy": val["accuracy"] if val else None,
               "seconds": time.time() - t0,
               "lr": lr, "steps": step,
               "elapsed": time.time() - start}
        history.append(row)
        if lead:
            print(epoch_line(row), flush=True)
    return Trained(history, epoch, step, time.time() - start)


def training_record(args, d, device, split, eng, trained, test_accuracy,
                    diff):
    """model.json's "training": the recipe, the split and how it ran."""
    hyper = {k: getattr(args, k) for k in RECIPES["default"]}
    hyper["epochs"] = args.epochs or None  # None: the clock alone
    hyper.update({"epochs_run": trained.epochs, "steps": trained.steps,
                  "budget_minutes": args.budget_minutes,
                  "pretrained": (os.path.basename(args.pretrained)
                                 if args.pretrained else None),
                  "seed": args.seed})
    training = {
        "recipe": args.recipe, "hyperparameters": hyper,
        "split": split,
        "device": (torch.cuda.get_device_name(device)
                   if device.type == "cuda" else "cpu"),
        "world_size": d.world,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "amp": (str(eng.amp_dtype).replace("torch.", "") if eng.amp_dtype
                else None),
        "seconds": round(trained.seconds, 1),
        "torch": torch.__version__,
        "test_accuracy": test_accuracy,
    }
    if d.on:
        training["ddp"] = {"backend": dist.get_backend(),
                           "max_param_diff_across_ranks": diff}
    return training


def write_model_folder(args, eng, pre, trained, metrics, training):
    """Write checkpoint.pt, history.json, metrics.json and the export, whole
    or not at all (training/model_folder.py): a kill leaves the old folder or
    the new one, a full disk raises FolderError and leaves the old one."""
    manifest = {"name": args.name, "kind": "torchscript",
                "classes": fashion_mnist.CLASSES, "input": pre.manifest(),
                "training": training}
    ckpt = export_vgg.make_checkpoint(eng.model, eng.config, manifest)
    # In memory first: torch's file writer aborts the process on a full disk.
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    with model_folder.staged(args.out) as tmp:
        model_folder.write_bytes(os.path.join(tmp, "checkpoint.pt"),
                                 buf.getbuffer())
        model_folder.write_json(os.path.join(tmp, "history.json"),
                                {"name": args.name, "epochs": trained.history})
        model_folder.write_json(os.path.join(tmp, "metrics.json"), metrics)
        if args.export:
            export_vgg.export(ckpt, tmp)
    print("test accuracy %.4f (%d images), %.1f s; wrote %s"
          % (metrics["test_accuracy"], metrics["n"], trained.seconds,
             args.out), flush=True)


def run(args, d):
    """Train on this rank; rank 0 writes the model folder."""
    device = setup_device(args, d)
    amp_dtype, scaler = setup_amp(args, device)
    torch.manual_seed(args.seed)
    data, pre = prepare_data(args, device)
    eng = build_engine(args, d, device, pre, amp_dtype, scaler)
    status = None
    if args.status and d.rank == 0:
        status = train_status.Status(args.status, args.name, args.epochs,
                                     timed=bool(args.budget_minutes))
    try:
        trained = train_epochs(args, d, device, data, pre, eng, status)
        if status:
            status.update(trained.epochs, 1.0, "testing", force=True)
        test = evaluate(eng.model, data["test"], pre, d, device)
        if status:
            status.tail_s = 5.0
            status.update(trained.epochs, 1.0, "exporting", force=True)
        finish(args, d, device, data, eng, pre, trained, test)
    finally:
        if status:
            status.close()


def finish(args, d, device, data, eng, pre, trained, test):
    """The test metrics and the model folder (rank 0 writes it)."""
    diff = params_digest(eng.model, d, device)
    if d.rank != 0:
        return
    metrics = metrics_from_confusion(test["confusion"], fashion_mnist.CLASSES,
                                     test["loss"])
    training = training_record(args, d, device, data["split"], eng, trained,
                               metrics["test_accuracy"], diff)
    write_model_folder(args, eng, pre, trained, metrics, training)


# ==== Processes ====

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_for(args):
    cuda = (args.device.startswith("cuda") or
            (args.device == "auto" and torch.cuda.is_available()))
    return "nccl" if cuda else "gloo"


def spawned(rank, args, port):
    """Entry point of a process started by --nproc."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "RANK": str(rank), "WORLD_SIZE": str(args.nproc),
                       "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(args.nproc)})
    distributed(args)


def distributed(args):
    """One DDP rank, from the env:// variables. torchrun sets all of them;
    Kubeflow's PyTorchJob starts one process per pod and sets neither
    LOCAL_RANK nor LOCAL_WORLD_SIZE: that process is alone on its machine
    (device cuda:0, every core)."""
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    dist.init_process_group(backend_for(args), init_method="env://",
                            rank=rank, world_size=world)
    try:
        run(args, Dist(rank, world, local, local_world))
    finally:
        dist.destroy_process_group()


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.nproc > 1:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise UsageError("--nproc starts its own processes; do not "
                                 "combine it with torchrun")
            if backend_for(args) == "nccl" and \
                    torch.cuda.device_count() < args.nproc:
                raise UsageError("--nproc %d needs %d GPUs, %d found"
                                 % (args.nproc, args.nproc,
                                    torch.cuda.device_count()))
            torch.multiprocessing.spawn(spawned, args=(args, free_port()),
                                        nprocs=args.nproc, join=True)
        elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
            distributed(args)
        else:
            run(args, Dist())
    except (UsageError, FileNotFoundError, ValueError,
            model_folder.FolderError) as e:
        print("train_vgg.py: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
