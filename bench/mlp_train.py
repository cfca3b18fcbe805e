#!/usr/bin/python3
"""Seconds per training epoch: Loupe's C MLP against sklearn and PyTorch, in one run.

Every contender trains the seed's network (784-256-128-64-32-10, relu, plain SGD,
lr 0.1, batch 32, no momentum, no weight decay) on 54,000 Fashion-MNIST images as
float32, on this machine, with the same OpenBLAS kernel (OPENBLAS_CORETYPE as
Loupe picks it from CPUID, exported here for the peers too) and all cores:
  loupe        `loupe train-mlp`, its per-epoch seconds from history.json (the
               batch loop alone; validation runs after the clock stops)
  loupe-dense  the same with --dense: every layer through BLAS GEMMs, none of
               the sparse kernels (what Loupe's own kernels add)
  sklearn      MLPClassifier(solver="sgd", momentum=0, alpha=0, batch_size=32,
               learning_rate_init=0.1), each partial_fit (one epoch) timed
  pytorch      eager nn.Sequential + torch.optim.SGD, torch.set_num_threads(cores),
               batches pre-sliced before the clock starts
The contenders take turns for --rounds rounds (this machine is shared: a burst
of load then slows one turn, not one contender), two epochs a turn (PyTorch, far
behind, one), and each one's best and median epoch are printed with the ratios. Then Loupe's dense-equivalent GFLOP/s beside
the machine's large-SGEMM GFLOP/s, and the peak resident memory of a full
100-epoch Loupe run (measured first, while this script is still small: a child's
peak RSS includes its parent's at fork). For reference it also times sklearn
with OpenBLAS choosing its kernel itself, as a user who never heard of
OPENBLAS_CORETYPE gets it.

usage: bench/mlp_train.py [--loupe build/cli/loupe] [--rounds 3] [--memory-epochs 100]
"""
import argparse
import gzip
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

DATA = "/usr/share/datasets/fashion-mnist"
SIZES = [784, 256, 128, 64, 32, 10]
N_TRAIN = 54000


def pick_coretype():
    """The kernel Loupe's blas_env.c picks; the peers get the same."""
    flags = open("/proc/cpuinfo").read()
    if all(f in flags for f in ("avx512f", "avx512bw", "avx512dq", "avx512vl")):
        return "SkylakeX"
    if "avx2" in flags and "fma" in flags:
        return "Haswell"
    return None


def load_images():
    with gzip.open(os.path.join(DATA, "train-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(os.path.join(DATA, "train-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return (x[:N_TRAIN].astype(np.float32) / 255.0), y[:N_TRAIN].astype(np.int64)


def flops_per_epoch():
    """Multiply-adds x2 of one epoch: forward, weight gradients, and the input
    gradients of every layer but the first (nobody needs d loss / d pixels)."""
    mm = [SIZES[i] * SIZES[i + 1] for i in range(len(SIZES) - 1)]
    return 2.0 * N_TRAIN * (sum(mm) + sum(mm) + sum(mm[1:]))


def loupe_epochs(loupe, tmp, extra=(), epochs=2):
    """Per-epoch seconds of one `loupe train-mlp` run."""
    out = os.path.join(tmp, "loupe")
    subprocess.run([loupe, "train-mlp", "--epochs", str(epochs), "--out", out, "--quiet", *extra],
                   check=True, stderr=subprocess.DEVNULL)
    with open(os.path.join(out, "history.json")) as f:
        return [e["seconds"] for e in json.load(f)["epochs"]]


class SklearnEpochs:
    """sklearn's MLPClassifier, one epoch (partial_fit) per call."""

    def __init__(self, x, y):
        from sklearn.neural_network import MLPClassifier
        self.x, self.y = x, y
        self.clf = MLPClassifier(hidden_layer_sizes=tuple(SIZES[1:-1]), activation="relu", solver="sgd",
                                 learning_rate_init=0.1, momentum=0.0, nesterovs_momentum=False, alpha=0.0,
                                 batch_size=32, shuffle=True, random_state=0)
        self.classes = np.arange(10)

    def epoch(self):
        t0 = time.perf_counter()
        self.clf.partial_fit(self.x, self.y, classes=self.classes)
        return time.perf_counter() - t0


class TorchEpochs:
    """PyTorch eager, one epoch per call over pre-sliced batches."""

    def __init__(self, x, y):
        import torch
        self.torch = torch
        torch.set_num_threads(os.cpu_count())
        torch.manual_seed(0)
        layers = []
        for i in range(len(SIZES) - 1):
            layers.append(torch.nn.Linear(SIZES[i], SIZES[i + 1]))
            if i < len(SIZES) - 2:
                layers.append(torch.nn.ReLU())
        self.model = torch.nn.Sequential(*layers)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        perm = torch.randperm(N_TRAIN)
        self.batches = [(xt[perm[i:i + 32]].contiguous(), yt[perm[i:i + 32]].contiguous())
                        for i in range(0, N_TRAIN, 32)]

    def epoch(self):
        t0 = time.perf_counter()
        for xb, yb in self.batches:
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model(xb), yb)
            loss.backward()
            self.opt.step()
        return time.perf_counter() - t0


def large_sgemm_gflops():
    a = np.random.default_rng(0).random((4096, 4096), dtype=np.float32)
    b = a.copy()
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(3))
    return 2 * 4096 ** 3 / best / 1e9


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def blas_kernel():
    try:
        from threadpoolctl import threadpool_info
        for info in threadpool_info():
            if info.get("internal_api") == "openblas":
                return f"{info.get('architecture')} ({info.get('num_threads')} threads)"
    except ImportError:
        pass
    return "unknown"


def loupe_peak_rss(loupe, epochs, tmp):
    out = os.path.join(tmp, "loupe-mem")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run([loupe, "train-mlp", "--epochs", str(epochs), "--out", out, "--quiet"],
                   check=True, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(os.path.join(out, "metrics.json")) as f:
        acc = json.load(f)["test_accuracy"]
    return max(peak, before) / 1024.0, wall, acc


def main():
    if os.environ.get("LOUPE_BENCH_SKLEARN_ONLY"):
        # The reference run: sklearn under OpenBLAS's own kernel choice.
        x, y = load_images()
        sk = SklearnEpochs(x, y)
        secs = [sk.epoch() for _ in range(int(os.environ["LOUPE_BENCH_SKLEARN_ONLY"]))]
        print(f"SKLEARN {min(secs)} {blas_kernel()}")
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loupe", default="build/cli/loupe", help="the loupe binary")
    ap.add_argument("--rounds", type=int, default=3,
                    help="turns each contender takes (2 epochs a turn, PyTorch 1; default 3)")
    ap.add_argument("--memory-epochs", type=int, default=100,
                    help="epochs of the Loupe run whose peak memory is reported (0 skips it)")
    args = ap.parse_args()
    core = pick_coretype()
    if core and "OPENBLAS_CORETYPE" not in os.environ:
        # Re-run with the kernel set before numpy loads OpenBLAS (it reads it once, at load).
        os.environ["OPENBLAS_CORETYPE"] = core
        os.execv(sys.executable, [sys.executable] + sys.argv)
    rss = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.memory_epochs:
            rss = loupe_peak_rss(args.loupe, args.memory_epochs, tmp)
    x, y = load_images()
    cores = os.cpu_count()
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores; "
          f"OpenBLAS kernel {blas_kernel()}; {N_TRAIN} samples, batch 32, lr 0.1, "
          f"hidden {','.join(map(str, SIZES[1:-1]))}, relu; {args.rounds} rounds")
    times = {"loupe": [], "loupe-dense": [], "sklearn": [], "pytorch": []}
    sk, th = SklearnEpochs(x, y), TorchEpochs(x, y)
    sk.epoch()  # the first partial_fit also sets the network up
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            # Each turn starts after a pause: the peers' BLAS and OpenMP threads spin
            # (and yield) for a while after their last call, on the cores the next
            # contender needs.
            for name, turn in (("loupe", lambda: loupe_epochs(args.loupe, tmp)),
                               ("loupe-dense", lambda: loupe_epochs(args.loupe, tmp, ["--dense"])),
                               ("sklearn", lambda: [sk.epoch(), sk.epoch()]), ("pytorch", lambda: [th.epoch()])):
                time.sleep(1.0)
                times[name] += turn()
    best = {k: min(v) for k, v in times.items()}
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"\n{'contender':<12} {'best s':>7} {'median s':>9}   {'Loupe is (best, median)':<24} epochs")
    for k in times:
        ratio = "" if k == "loupe" else f"{best[k] / best['loupe']:5.1f}x {med[k] / med['loupe']:5.1f}x"
        print(f"{k:<12} {best[k]:7.3f} {med[k]:9.3f}   {ratio:<24} {', '.join(f'{t:.3f}' for t in times[k])}")
    gemm = large_sgemm_gflops()
    gf = flops_per_epoch() / best["loupe"] / 1e9
    print(f"\nLoupe: {gf:.1f} GFLOP/s dense-equivalent ({flops_per_epoch() / 1e9:.1f} GFLOP an epoch if no "
          f"product with a 0 were skipped; --dense: {flops_per_epoch() / best['loupe-dense'] / 1e9:.1f}); "
          f"large SGEMM (4096^3, numpy, same OpenBLAS kernel) on this machine: {gemm:.1f} GFLOP/s")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env["LOUPE_BENCH_SKLEARN_ONLY"] = str(max(args.rounds, 2))
    ref = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True)
    line = [l for l in ref.stdout.splitlines() if l.startswith("SKLEARN ")]
    if line:
        secs, kernel = line[0].split(" ", 2)[1:]
        print(f"{'sklearn*':<12} {float(secs):7.3f} {'':>9}   {float(secs) / best['loupe']:5.1f}x"
              f"{'':<18} (* best epoch with OpenBLAS's own kernel choice, {kernel}, as a user gets it)")
    if rss:
        mb, wall, acc = rss
        print(f"Loupe {args.memory_epochs}-epoch run: peak RSS {mb:.0f} MB, {wall:.0f} s wall, "
              f"test accuracy {100 * acc:.2f}%")


if __name__ == "__main__":
    main()
