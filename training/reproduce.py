#!/usr/bin/python3
"""Reproduce the seed report end to end: run every experiment, write the report.

The seed report (MLPs from scratch against sklearn on Fashion-MNIST, a VGG on it)
assembled its numbers and plots by hand. This runs the same experiments and
writes reports/<name>/report.md with its figures, and report.json (the same
content as data, served by `loupe serve` under /v1/reports):

  mlp      `loupe train-mlp` on the seed's split (--split seed) for sigmoid, tanh,
           relu and linear: lr 0.1, batch 32, 100 epochs, checkpoints at 50 and
           100; linear with --keep-going, as the seed's loop ran
  sklearn  MLPClassifier with the same hyperparameters (solver sgd, momentum 0,
           alpha 0, batch 32, lr 0.1, same hidden sizes), 50 then 100 iterations
           on exactly the same images (`loupe split`), plus linear at lr 0.001
  vgg      training/train_vgg.py, the default recipe; --vgg-recipe seed adds the
           report's own method (needs --pretrained)

Finished runs are reused unless --force, so an interrupted reproduction
resumes. Every number in the report comes from the files the runs wrote; the
seed's own figures come from training/seed_results.json alone.
--quick runs the same grid on a subset with a few epochs (minutes): tests use it.
"""
import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

ACTS = ("sigmoid", "tanh", "relu", "linear")
HIDDEN = (256, 128, 64, 32)
DATA = "/usr/share/datasets/fashion-mnist"


# ==== Configuration ====

def plan(args):
    """Epoch counts and subsets for a full or a quick reproduction."""
    if args.quick:
        return {"epochs": 3, "checkpoints": (2, 3), "train_limit": 2000,
                "vgg": ["--width", "0.0625", "--epochs", "1", "--train-subset", "1000",
                        "--val-subset", "300", "--test-subset", "500", "--batch-size", "64"]}
    return {"epochs": 100, "checkpoints": (50, 100), "train_limit": 0, "vgg": []}


def log(msg):
    print(f"reproduce: {msg}", file=sys.stderr, flush=True)


def load_json(path):
    with open(path) as f:
        return json.load(f)


def save_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, allow_nan=False)
    os.replace(tmp, path)


def finite_or_none(v):
    return v if v is not None and math.isfinite(v) else None


# ==== Runs that write a model folder ====

def finished(d, args):
    """A model folder from an earlier invocation, to reuse unless --force."""
    return os.path.isfile(os.path.join(d, "metrics.json")) and not args.force


def train_folder(label, d, cmd, ok, show_progress):
    """Run a trainer that writes the model folder d; record its wall time in d/wall.json.
    Without show_progress its stderr is kept back and shown only if it fails."""
    log(f"{label}: {' '.join(cmd)}")
    t0 = time.time()
    p = subprocess.run(cmd, stderr=None if show_progress else subprocess.PIPE, text=True)
    if p.returncode not in ok:
        sys.exit(f"reproduce: {label} failed (exit {p.returncode}):\n{p.stderr or ''}")
    save_json(os.path.join(d, "wall.json"), {"seconds": time.time() - t0, "command": cmd})


def wall_seconds(d):
    """The wall time train_folder recorded for d, or None."""
    path = os.path.join(d, "wall.json")
    return load_json(path)["seconds"] if os.path.isfile(path) else None


# ==== The MLP runs (Loupe) ====

def run_mlp(args, cfg, runs):
    out = {}
    for act in ACTS:
        d = os.path.join(runs, f"mlp-{act}")
        out[act] = d
        if finished(d, args):
            log(f"mlp {act}: reusing {d}")
            continue
        cmd = [args.loupe, "train-mlp", "--split", "seed", "--activation", act, "--lr", "0.1",
               "--batch", "32", "--epochs", str(cfg["epochs"]), "--hidden", ",".join(map(str, HIDDEN)),
               "--checkpoint-at", ",".join(map(str, cfg["checkpoints"])), "--out", d, "--quiet"]
        if cfg["train_limit"]:
            cmd += ["--train-limit", str(cfg["train_limit"])]
        if act == "linear":
            cmd.append("--keep-going")
        # Exit status 3: stopped on divergence, the folder written all the same.
        train_folder(f"mlp {act}", d, cmd, ok=(0, 3), show_progress=False)
    return out


# ==== The sklearn runs ====

def load_split(args, cfg):
    """The seed split's train and test images, exactly as loupe train-mlp uses them."""
    import gzip
    split = json.loads(subprocess.run([args.loupe, "split", "--split", "seed"], check=True,
                                      capture_output=True, text=True).stdout)
    with gzip.open(os.path.join(args.data, "train-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255.0
    with gzip.open(os.path.join(args.data, "train-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    tr = np.array(split["train"])
    if cfg["train_limit"]:
        tr = tr[:cfg["train_limit"]]
    te = np.array(split["test"])
    return x[tr], y[tr], x[te], y[te]


def sklearn_predict(clf, x):
    """Predictions computed from the weights, also when sklearn's own checks refuse them."""
    h = x.astype(np.float64)
    act = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh, "identity": lambda z: z,
           "logistic": lambda z: 1 / (1 + np.exp(-z))}[clf.activation]
    with np.errstate(all="ignore"):
        for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
            h = h @ w + b
            if i < len(clf.coefs_) - 1:
                h = act(h)
    h = np.where(np.isfinite(h), h, -np.inf)
    # A row that is all -inf (NaN weights) predicts class 0, as argmax does.
    return np.argmax(h, axis=1)


def sklearn_fit(act, lr, iters, data):
    import warnings
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    xtr, ytr, xte, yte = data
    sk_act = {"linear": "identity", "sigmoid": "logistic"}.get(act, act)
    clf = MLPClassifier(hidden_layer_sizes=HIDDEN, activation=sk_act,
                        solver="sgd", learning_rate_init=lr, learning_rate="constant", momentum=0.0,
                        nesterovs_momentum=False, alpha=0.0, batch_size=32, max_iter=iters[0],
                        n_iter_no_change=iters[-1], tol=0.0, shuffle=True, random_state=0)
    result = {"activation": act, "lr": lr, "iterations": list(iters), "test_accuracy": {},
              "errors": [], "seconds": 0.0}
    done = 0
    for it in iters:
        clf.set_params(max_iter=it - done, warm_start=done > 0)
        t0 = time.time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                clf.fit(xtr, ytr)
            except ValueError as e:  # sklearn 1.2 refuses non-finite weights at the end of fit
                result["errors"].append({"after_iterations": it, "message": str(e)})
        result["seconds"] += time.time() - t0
        done = it
        acc = float(np.mean(sklearn_predict(clf, xte) == yte))
        result["test_accuracy"][str(it)] = acc
        if result["errors"]:
            # A diverged network does not come back: the later checkpoints equal this one.
            for later in iters[iters.index(it) + 1:]:
                result["test_accuracy"][str(later)] = acc
            break
    result["loss_curve"] = [finite_or_none(float(v)) for v in getattr(clf, "loss_curve_", [])]
    bad = [i + 1 for i, v in enumerate(result["loss_curve"]) if v is None]
    result["first_nonfinite_iteration"] = bad[0] if bad else None
    return result


def run_sklearn(args, cfg, runs):
    out, data = {}, None
    iters = tuple(cfg["checkpoints"])
    jobs = [(act, 0.1) for act in ACTS] + [("linear", 0.001)]
    for act, lr in jobs:
        name = f"sklearn-{act}" + ("" if lr == 0.1 else f"-lr{lr:g}")
        path = os.path.join(runs, name + ".json")
        out[name] = path
        if os.path.isfile(path) and not args.force:
            log(f"{name}: reusing {path}")
            continue
        if data is None:
            data = load_split(args, cfg)
        log(f"{name}: MLPClassifier {iters} iterations on {len(data[1])} images")
        save_json(path, sklearn_fit(act, lr, iters, data))
    return out


# ==== The VGG runs ====

def run_vgg(args, cfg, runs):
    out = {}
    recipes = ["default"] + (["seed"] if args.vgg_recipe == "seed" else [])
    for recipe in recipes:
        d = os.path.join(runs, f"vgg-{recipe}")
        out[recipe] = d
        if finished(d, args):
            log(f"vgg {recipe}: reusing {d}")
            continue
        cmd = [sys.executable, os.path.join(HERE, "train_vgg.py"), "--recipe", recipe, "--out", d,
               "--data", args.data, "--quiet"] + cfg["vgg"]
        if recipe == "seed":
            cmd += ["--pretrained", args.pretrained]
        train_folder(f"vgg {recipe}", d, cmd, ok=(0,), show_progress=True)
    return out


# ==== Figures ====

def plt_module():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_fig(plt, fig, figs, name):
    """Write fig as figs/name and close it; returns name."""
    fig.tight_layout()
    fig.savefig(os.path.join(figs, name), dpi=100)
    plt.close(fig)
    return name


def series(hist, key):
    return [e.get(key) if e.get(key) is not None else np.nan for e in hist["epochs"]]


def first_nonfinite_epoch(hist):
    for e in hist["epochs"]:
        if e.get("train_loss") is None:
            return e["epoch"]
    return None


def fig_mlp_losses(plt, mlp_dirs, figs):
    names = []
    for act, d in mlp_dirs.items():
        h = load_json(os.path.join(d, "history.json"))
        ep = [e["epoch"] for e in h["epochs"]]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot(ep, series(h, "train_loss"), label="training")
        ax.plot(ep, series(h, "val_loss"), label="validation")
        stop = first_nonfinite_epoch(h)
        if stop:
            ax.axvline(stop, color="red", linestyle="--", label=f"loss not finite (epoch {stop})")
        ax.set(title=f"Loupe MLP, {act}: loss per epoch", xlabel="epoch", ylabel="cross-entropy (nats)")
        ax.legend()
        names.append(save_fig(plt, fig, figs, f"mlp_loss_{act}.png"))
    return names


def fig_vs_sklearn(plt, mlp_dirs, sk, figs):
    names = []
    for act, d in mlp_dirs.items():
        h = load_json(os.path.join(d, "history.json"))
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot([e["epoch"] for e in h["epochs"]], series(h, "train_loss"), label="Loupe (lr 0.1)")
        s = load_json(sk[f"sklearn-{act}"])
        curve = [v if v is not None else np.nan for v in s["loss_curve"]]
        ax.plot(range(1, len(curve) + 1), curve, label="sklearn (lr 0.1)")
        if act == "linear" and "sklearn-linear-lr0.001" in sk:
            s2 = load_json(sk["sklearn-linear-lr0.001"])
            ax.plot(range(1, len(s2["loss_curve"]) + 1),
                    [v if v is not None else np.nan for v in s2["loss_curve"]], label="sklearn (lr 0.001)")
        for label, ep in (("Loupe", first_nonfinite_epoch(h)), ("sklearn", s["first_nonfinite_iteration"])):
            if ep:
                ax.axvline(ep, linestyle=":", color="red")
                ax.annotate(f"{label} diverges ({ep})", (ep, 0.5), xycoords=("data", "axes fraction"),
                            rotation=90, fontsize=8, color="red")
        ax.set(title=f"training loss, {act}: Loupe vs sklearn", xlabel="epoch / iteration",
               ylabel="cross-entropy (nats)")
        ax.legend()
        names.append(save_fig(plt, fig, figs, f"loupe_vs_sklearn_{act}.png"))
    return names


def fig_vgg(plt, d, m, classes, figs, tag):
    names = []
    h = load_json(os.path.join(d, "history.json"))
    ep = [e["epoch"] for e in h["epochs"]]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    a1.plot(ep, series(h, "train_loss"), label="training")
    a1.plot(ep, series(h, "val_loss"), label="validation")
    a1.set(title="loss", xlabel="epoch", ylabel="cross-entropy (nats)")
    a2.plot(ep, [100 * v for v in series(h, "train_accuracy")], label="training")
    a2.plot(ep, [100 * v for v in series(h, "val_accuracy")], label="validation")
    a2.set(title="accuracy", xlabel="epoch", ylabel="%")
    for a in (a1, a2):
        a.legend()
    fig.tight_layout()
    names.append(f"vgg_{tag}_curves.png")
    fig.savefig(os.path.join(figs, names[-1]), dpi=100)
    plt.close(fig)

    conf = np.array(m["confusion"])
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    ax.imshow(conf, cmap="viridis")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, conf[i, j], ha="center", va="center", fontsize=7,
                    color="white" if conf[i, j] < conf.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=f"VGG ({tag}) confusion matrix, test set")
    fig.tight_layout()
    names.append(f"vgg_{tag}_confusion.png")
    fig.savefig(os.path.join(figs, names[-1]), dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(2, 5, figsize=(12, 5))
    for c, ax in enumerate(axes.flat):
        o = m["one_vs_rest"][c]
        mat = np.array([[o["tp"], o["fn"]], [o["fp"], o["tn"]]])
        ax.imshow(mat, cmap="Blues")
        for i in range(2):
            for j in range(2):
                ax.text(j, i, mat[i, j], ha="center", va="center", fontsize=9,
                        color="white" if mat[i, j] > mat.max() / 2 else "black")
        ax.set_xticks([0, 1], ["pred. yes", "pred. no"], fontsize=7)
        ax.set_yticks([0, 1], ["true yes", "true no"], fontsize=7)
        ax.set_title(classes[c], fontsize=9)
    fig.suptitle(f"VGG ({tag}): one-vs-rest matrix per class")
    fig.tight_layout()
    names.append(f"vgg_{tag}_one_vs_rest.png")
    fig.savefig(os.path.join(figs, names[-1]), dpi=100)
    plt.close(fig)
    return names


# ==== The seed's three VGG pictures, through the loupe CLI ====

def write_gray_png(path, pixels, side=28):
    """A grayscale PNG from side*side bytes, with the standard library only."""
    import struct
    import zlib
    raw = b"".join(b"\0" + bytes(pixels[side * y:side * (y + 1)]) for y in range(side))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def vgg_pictures(args, plt, d, figs, tag):
    """The extra credit's pictures, with `loupe visualize` and `loupe saliency`: filter 1 of
    conv5_1 (layer 24 in torchvision's vgg16 numbering, the eleventh convolution) from an
    input image, 40 iterations, a frame every 5; vanilla backprop for class 2 (Pullover);
    filter 5 of every convolution from a random image. The seed's input was a cat photo;
    ours is the first Pullover of the test set."""
    import gzip
    man = load_json(os.path.join(d, "model.json"))
    convs = [l for l in man["layers"] if l["type"] == "conv2d"]
    if not convs:
        return [], None
    with gzip.open(os.path.join(args.data, "t10k-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(os.path.join(args.data, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    img = os.path.join(figs, "input_pullover.png")
    write_gray_png(img, images[int(np.argmax(labels == 2))])
    conv5_1 = convs[10] if len(convs) > 10 else convs[-1]
    names = ["input_pullover.png"]

    def loupe(*a):
        subprocess.run([args.loupe, *a], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    names.append(f"vgg_{tag}_conv5_1_filter1.png")
    loupe("visualize", d, "--layer", str(conv5_1["index"]), "--filter", "1", "--image", img,
          "--iterations", "40", "--every", "5", "--scale", "4", "--out", os.path.join(figs, names[-1]))
    names.append(f"vgg_{tag}_saliency_pullover.png")
    loupe("saliency", d, img, "--target", "2", "--scale", "8", "--overlay", "--out", os.path.join(figs, names[-1]))
    tiles = []
    for c in convs:
        f = min(5, c["channels"] - 1)
        tmp = os.path.join(figs, f".layer{c['index']}.png")
        loupe("visualize", d, "--layer", str(c["index"]), "--filter", str(f), "--iterations", "30",
              "--every", "30", "--scale", "4", "--out", tmp)
        tiles.append((c, f, plt.imread(tmp)))
        os.remove(tmp)
    cols = min(len(tiles), 7)
    rows = (len(tiles) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (c, f, im) in zip(axes.flat, tiles):
        ax.imshow(im, cmap="gray")
        ax.set_title(f"layer {c['index']}, filter {f}", fontsize=8)
    fig.suptitle(f"VGG ({tag}): filter 5 of every convolution, 30 Adam steps from a random image")
    fig.tight_layout()
    names.append(f"vgg_{tag}_filter5_every_conv.png")
    fig.savefig(os.path.join(figs, names[-1]), dpi=100)
    plt.close(fig)
    return names, conv5_1


# ==== Findings ====

def findings(m, classes):
    """The seed's hand-written findings, computed from a metrics.json."""
    conf = np.array(m["confusion"])
    row = conf.sum(axis=1)
    acc = np.diag(conf) / np.maximum(row, 1)
    off = conf.copy()
    np.fill_diagonal(off, -1)
    fn = row - np.diag(conf)
    fp = conf.sum(axis=0) - np.diag(conf)
    return {
        "most_accurate": {"class": classes[int(np.argmax(acc))], "accuracy": float(acc.max())},
        "least_accurate": {"class": classes[int(np.argmin(acc))], "accuracy": float(acc.min())},
        "most_confused_with": [{"class": classes[i], "confused_with": classes[int(np.argmax(off[i]))],
                                "count": int(off[i].max())} for i in range(len(classes))],
        "most_false_negatives": {"class": classes[int(np.argmax(fn))], "count": int(fn.max())},
        "most_false_positives": {"class": classes[int(np.argmax(fp))], "count": int(fp.max())},
    }


# ==== The report ====

def machine():
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count()}


def commit():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def pct(v):
    return "—" if v is None else f"{100 * v:.2f}%"


def report_header(args, cfg, out):
    """The report's metadata and its opening paragraphs, as (rep, lines)."""
    c50, c100 = cfg["checkpoints"]
    now = datetime.datetime.now(datetime.timezone.utc)
    rep = {"name": os.path.basename(os.path.normpath(out)),
           "quick": bool(args.quick), "commit": commit(),
           "machine": machine(), "date": now.isoformat(timespec="seconds"),
           "checkpoints": [c50, c100], "figures": [], "runs": [],
           "tables": {}, "findings": {}}
    m = rep["machine"]
    quick = " --quick" if args.quick else ""
    lines = ["# Reproduction of the seed report"
             + (" (quick)" if args.quick else ""), "",
             f"Commit `{rep['commit']}`, {m['cpu']}, {m['cores']} cores, "
             f"{rep['date']}. Generated by `training/reproduce.py{quick}`; "
             "every number below comes from the runs' own files "
             "(history.json, metrics.json, the sklearn JSON files) except "
             "the seed's, which come from training/seed_results.json.", ""]
    if args.quick:
        lines += [f"**Quick run**: {cfg['train_limit']} training images and "
                  f"{c100} epochs, not the seed's recipe; the seed's columns "
                  "are beside it for layout, not for comparison.", ""]
    return rep, lines


def mlp_table(cfg, mlp_dirs, sk, rep):
    """Loupe's and sklearn's MLP test accuracies; adds their runs' times."""
    c50, c100 = cfg["checkpoints"]
    table = {}
    if mlp_dirs:
        for act, d in mlp_dirs.items():
            row = {}
            for e in (c50, c100):
                ck = os.path.join(d, "checkpoints", f"epoch-{e}")
                row[f"mine_{e}"] = (
                    load_json(os.path.join(ck, "metrics.json"))
                    ["test_accuracy"] if os.path.isdir(ck) else None)
            table[act] = row
            w = wall_seconds(d)
            rep["runs"].append({"run": f"mlp-{act}", "seconds": w})
    if sk:
        for act in ACTS:
            s = load_json(sk[f"sklearn-{act}"])
            table.setdefault(act, {})
            for e in (c50, c100):
                table[act][f"sklearn_{e}"] = s["test_accuracy"].get(str(e))
            rep["runs"].append({"run": f"sklearn-{act}",
                                "seconds": s["seconds"]})
        if "sklearn-linear-lr0.001" in sk:
            s = load_json(sk["sklearn-linear-lr0.001"])
            rep["runs"].append({"run": "sklearn-linear-lr0.001",
                                "seconds": s["seconds"]})
    rep["tables"]["mlp"] = table
    return table


def mlp_table_section(seed, cfg, table, rep):
    """The MLP table in the seed's layout, and the best model in it."""
    c50, c100 = cfg["checkpoints"]
    cols = [c for c in (f"sklearn_{c50}", f"mine_{c50}",
                        f"sklearn_{c100}", f"mine_{c100}")
            if any(c in r for r in table.values())]
    seed_cols = {f"sklearn_{c50}": "sklearn_50", f"mine_{c50}": "mine_50",
                 f"sklearn_{c100}": "sklearn_100",
                 f"mine_{c100}": "mine_100"}
    lines = ["## MLP: test accuracy, the seed's layout", "",
             "Loupe's C MLP (`mine`) and sklearn's MLPClassifier on the "
             "seed's split; each cell is this reproduction, then the seed's "
             "own figure.", "",
             "| activation | " + " | ".join(f"{c} (seed)" for c in cols)
             + " |",
             "|---|" + "---|" * len(cols)]
    for act in ACTS:
        cells = [f"{pct(table[act].get(c))} "
                 f"({seed['mlp'][seed_cols[c]][act]:.2f}%)" for c in cols]
        lines.append(f"| {act} | " + " | ".join(cells) + " |")
    best = max(((v, act, c) for act, r in table.items()
                for c, v in r.items() if v is not None), default=None)
    if best:
        who = "Loupe's MLP" if best[2].startswith("mine") else "sklearn"
        rep["best"] = {"model": who, "activation": best[1],
                       "column": best[2], "test_accuracy": best[0]}
        lines += ["", f"Best model: **{who}, {best[1]}, after "
                  f"{best[2].split('_')[1]} epochs: {pct(best[0])}** "
                  f"(the seed's: {seed['best']}).", ""]
    return lines


def add_figures(rep, lines, names):
    """Record the figures in rep and link them from the report's lines."""
    for name in names:
        rep["figures"].append(name)
        lines.append(f"![{name}](figures/{name})")


def mlp_loss_section(plt, mlp_dirs, figs, rep):
    """The MLPs' loss curves and where the linear network diverged."""
    lines = ["## MLP: loss per epoch", ""]
    add_figures(rep, lines, fig_mlp_losses(plt, mlp_dirs, figs))
    h = load_json(os.path.join(mlp_dirs["linear"], "history.json"))
    stop = first_nonfinite_epoch(h)
    rep["findings"]["linear_divergence_epoch"] = stop
    lines += ["", "The linear network ran with `--keep-going`, as the "
              "seed's did. " +
              (f"Its loss stopped being finite in epoch {stop}: Loupe's "
               "default would have stopped it there, kept the last finite "
               "weights and said so." if stop else
               "Its loss stayed finite in this run, so Loupe's default "
               "would not have stopped it."), ""]
    return lines


def vs_sklearn_section(plt, mlp_dirs, sk, figs, rep):
    """Loupe's and sklearn's training losses, and sklearn's linear failure."""
    lines = ["## Loupe vs sklearn: training loss", ""]
    add_figures(rep, lines, fig_vs_sklearn(plt, mlp_dirs, sk, figs))
    s = load_json(sk["sklearn-linear"])
    rep["findings"]["sklearn_linear"] = {
        "first_nonfinite_iteration": s["first_nonfinite_iteration"],
        "errors": s["errors"]}
    if s["errors"]:
        lines += ["", "sklearn's linear network at lr 0.1: loss not finite "
                  f"from iteration {s['first_nonfinite_iteration']}; "
                  f"sklearn raised \"{s['errors'][0]['message']}\" at the "
                  "end of the fit. The curve above is its loss as it "
                  "happened.", ""]
    return lines


def vgg_pictures_lines(pics, conv5_1):
    """The paragraph on the seed's three pictures of what the VGG learned."""
    return ["", "What the network learned, the seed's three pictures made "
            "with `loupe visualize` and `loupe saliency` (the seed's input "
            "was a cat photo; this one is the first Pullover of the test "
            f"set, ![input](figures/{pics[0]})):", "",
            f"- filter 1 of conv5_1 (layer {conv5_1['index']} here, 24 in "
            "torchvision's vgg16 without batch norm), optimised from the "
            "image for 40 iterations, a frame every 5:",
            f"  ![{pics[1]}](figures/{pics[1]})",
            "- vanilla backprop saliency for target class 2 (Pullover): "
            f"![{pics[2]}](figures/{pics[2]})",
            "- filter 5 of every convolution from a random image: "
            f"![{pics[3]}](figures/{pics[3]})", ""]


def vgg_findings_lines(seed, m, classes, f):
    """The VGG's per-class accuracy table and the seed's findings."""
    lines = ["", "| class | accuracy | the seed's |", "|---|---|---|"]
    for c, name in enumerate(classes):
        lines.append(f"| {name} | {pct(m['class_accuracy'][c])} | "
                     f"{seed['vgg']['class_accuracy'][c]:.1f}% |")
    acc, inacc = f["most_accurate"], f["least_accurate"]
    fn, fp = f["most_false_negatives"], f["most_false_positives"]
    lines += ["", "Findings, computed from the confusion matrix:", "",
              f"- Most accurately identified: {acc['class']} "
              f"({pct(acc['accuracy'])}).",
              f"- Least accurately identified: {inacc['class']} "
              f"({pct(inacc['accuracy'])}).",
              f"- Most false negatives: {fn['class']} ({fn['count']}).",
              f"- Most false positives: {fp['class']} ({fp['count']}).",
              "- Each class's most-confused class: " + "; ".join(
                  f"{x['class']} → {x['confused_with']} ({x['count']})"
                  for x in f["most_confused_with"]) + ".", ""]
    return lines


def vgg_section(args, plt, seed, recipe, d, figs, rep):
    """One VGG run: accuracy, figures, pictures, per-class table, findings."""
    m = load_json(os.path.join(d, "metrics.json"))
    classes = m.get("classes") or seed["vgg"]["classes"]
    w = wall_seconds(d)
    rep["runs"].append({"run": f"vgg-{recipe}", "seconds": w})
    f = findings(m, classes)
    rep["findings"][f"vgg_{recipe}"] = f
    rep["tables"][f"vgg_{recipe}"] = {
        "test_accuracy": m["test_accuracy"],
        "class_accuracy": m["class_accuracy"], "confusion": m["confusion"]}
    lines = [f"## VGG ({recipe} recipe)", "",
             f"Test accuracy **{pct(m['test_accuracy'])}** on "
             f"{sum(map(sum, m['confusion']))} test images (the seed: "
             f"{seed['vgg']['test_accuracy']:.2f}%)"
             + (f"; trained in {w / 60:.1f} min." if w else "."), ""]
    add_figures(rep, lines, fig_vgg(plt, d, m, classes, figs, recipe))
    pics, conv5_1 = vgg_pictures(args, plt, d, figs, recipe)
    if pics:
        rep["figures"] += pics
        lines += vgg_pictures_lines(pics, conv5_1)
    return lines + vgg_findings_lines(seed, m, classes, f)


def loss_theory_section():
    """The report's theory question: cross-entropy, KL and entropy."""
    return ["## The loss (the report's theory question)", "",
            "For a label distribution y and a prediction p over the "
            "classes, the cross-entropy is CE(y, p) = −Σ y_i log p_i = "
            "H(y) + KL(y ‖ p), where H(y) = −Σ y_i log y_i is the entropy "
            "of the labels and KL(y ‖ p) = Σ y_i log(y_i / p_i). A one-hot "
            "label has H(y) = 0, so for classification CE(y, p) = "
            "KL(y ‖ p): minimising the cross-entropy is minimising the KL "
            "divergence from the labels to the prediction. Both trainers "
            "report it in nats (natural log).", "",
            "The `entropy` that `/predict` returns is another quantity: "
            "H(p) = −Σ p_i log p_i of the prediction alone, with no label "
            "in it. It measures how undecided the model is about one image "
            "(0 when it puts all mass on one class, log 10 ≈ 2.303 nats "
            "when uniform), whether or not the prediction is right; a "
            "confidently wrong answer has low entropy and high "
            "cross-entropy.", ""]


def runs_section(rep):
    """The table of every run's wall time."""
    lines = ["## Runs", "", "| run | wall time |", "|---|---|"]
    for r in rep["runs"]:
        secs = "—" if r["seconds"] is None else f"{r['seconds']:.0f} s"
        lines.append(f"| {r['run']} | {secs} |")
    lines.append("")
    return lines


def write_report(out, lines, rep):
    """Write report.md and report.json into out."""
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines))
    save_json(os.path.join(out, "report.json"), rep)


def build_report(args, cfg, out, mlp_dirs, sk, vgg_dirs):
    """Write report.md, its figures and report.json from the runs' files."""
    seed = load_json(os.path.join(HERE, "seed_results.json"))
    figs = os.path.join(out, "figures")
    os.makedirs(figs, exist_ok=True)
    plt = plt_module()
    rep, lines = report_header(args, cfg, out)
    table = mlp_table(cfg, mlp_dirs, sk, rep)
    if table:
        lines += mlp_table_section(seed, cfg, table, rep)
    if mlp_dirs:
        lines += mlp_loss_section(plt, mlp_dirs, figs, rep)
    if mlp_dirs and sk:
        lines += vs_sklearn_section(plt, mlp_dirs, sk, figs, rep)
    for recipe, d in (vgg_dirs or {}).items():
        lines += vgg_section(args, plt, seed, recipe, d, figs, rep)
    lines += loss_theory_section()
    lines += runs_section(rep)
    write_report(out, lines, rep)
    return rep


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.split("\n")[2:]))
    ap.add_argument("--out", default=None, help="report folder (default reports/seed-reproduction, "
                    "or reports/seed-reproduction-quick with --quick)")
    ap.add_argument("--quick", action="store_true", help="a subset and a few epochs: minutes, for tests")
    ap.add_argument("--only", choices=("mlp", "sklearn", "vgg"), action="append",
                    help="run only these parts (repeatable); the report uses whatever runs exist")
    ap.add_argument("--force", action="store_true", help="rerun finished runs instead of reusing them")
    ap.add_argument("--loupe", default=os.path.join(ROOT, "build", "cli", "loupe"), help="the loupe binary")
    ap.add_argument("--data", default=DATA, help="Fashion-MNIST IDX folder (default the Debian package's)")
    ap.add_argument("--vgg-recipe", choices=("default", "seed"), default="default",
                    help="seed also runs the report's own VGG method (needs --pretrained, and a GPU in practice)")
    ap.add_argument("--pretrained", help="ImageNet vgg16 state_dict for --vgg-recipe seed")
    args = ap.parse_args()
    if args.vgg_recipe == "seed" and not args.pretrained:
        ap.error("--vgg-recipe seed needs --pretrained FILE (an ImageNet vgg16 state_dict); nothing is downloaded")
    out = args.out or os.path.join(ROOT, "reports", "seed-reproduction" + ("-quick" if args.quick else ""))
    runs = os.path.join(out, "runs")
    os.makedirs(runs, exist_ok=True)
    cfg = plan(args)
    parts = set(args.only or ("mlp", "sklearn", "vgg"))
    t0 = time.time()
    mlp_dirs = run_mlp(args, cfg, runs) if "mlp" in parts else existing(runs, "mlp")
    sk = run_sklearn(args, cfg, runs) if "sklearn" in parts else existing(runs, "sklearn")
    vgg = run_vgg(args, cfg, runs) if "vgg" in parts else existing(runs, "vgg")
    build_report(args, cfg, out, mlp_dirs, sk, vgg)
    log(f"wrote {os.path.join(out, 'report.md')} in {time.time() - t0:.0f} s")


def existing(runs, part):
    """Runs of a part not asked for this time, when an earlier invocation left them."""
    if part == "mlp":
        d = {a: os.path.join(runs, f"mlp-{a}") for a in ACTS}
        return d if all(os.path.isfile(os.path.join(v, "metrics.json")) for v in d.values()) else {}
    if part == "sklearn":
        d = {f"sklearn-{a}": os.path.join(runs, f"sklearn-{a}.json") for a in ACTS}
        extra = os.path.join(runs, "sklearn-linear-lr0.001.json")
        if os.path.isfile(extra):
            d["sklearn-linear-lr0.001"] = extra
        return d if all(os.path.isfile(v) for k, v in d.items() if k != "sklearn-linear-lr0.001") else {}
    d = {r: os.path.join(runs, f"vgg-{r}") for r in ("default", "seed")}
    return {r: v for r, v in d.items() if os.path.isfile(os.path.join(v, "metrics.json"))}


if __name__ == "__main__":
    main()
