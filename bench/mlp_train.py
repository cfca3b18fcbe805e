#!/usr/bin/python3
"""Seconds per training epoch: Loupe's C MLP against sklearn and PyTorch, in one run, at each ISA level.

Every contender trains the seed's network (784-256-128-64-32-10, relu, plain SGD,
lr 0.1, batch 32, no momentum, no weight decay) on 54,000 Fashion-MNIST images as
float32, on this machine, on all cores. The run measures one or more ISA levels,
each as a machine whose CPU stops there would run it, every contender under the
same limits, in a child process of its own (OpenBLAS and ATen read them at load):
  avx512    OPENBLAS_CORETYPE=SkylakeX, ATEN_CPU_CAPABILITY=avx512, Loupe's
            automatic choice there (LOUPE_MLP_KERNELS=avx512)
  avx2      OPENBLAS_CORETYPE=Haswell, ATEN_CPU_CAPABILITY=avx2,
            LOUPE_MLP_KERNELS=avx2: an AVX2+FMA CPU without AVX-512, measured
            even on an AVX-512 one
  portable  OPENBLAS_CORETYPE=Nehalem (SSE4.2), ATEN_CPU_CAPABILITY=default:
            Loupe's automatic choice there is dense; its portable sparse
            kernels are timed beside it (LOUPE_MLP_KERNELS=portable)
The contenders at a level:
  loupe          `loupe train-mlp` with the level's automatic kernels, its
                 per-epoch seconds from history.json (the batch loop alone;
                 validation runs after the clock stops)
  loupe-dense    the same with --dense: every layer through BLAS GEMMs
  loupe-portable (portable level) the sparse kernels in plain C
  sklearn        MLPClassifier(solver="sgd", momentum=0, alpha=0, batch_size=32,
                 learning_rate_init=0.1), each partial_fit (one epoch) timed
  pytorch        eager nn.Sequential + torch.optim.SGD, torch.set_num_threads(cores),
                 batches pre-sliced before the clock starts
They take turns for --rounds rounds (this machine is shared: a burst of load then
slows one turn, not one contender), two epochs a turn (PyTorch, far behind, one),
and each one's best and median epoch are printed with the ratios, and whether
the automatic choice is no slower than --dense. At the CPU's own widest level it
also prints Loupe's dense-equivalent GFLOP/s beside the machine's large-SGEMM
GFLOP/s, the peak resident memory of a full 100-epoch Loupe run (measured first,
while this script is still small: a child's peak RSS includes its parent's at
fork), and sklearn with OpenBLAS choosing its kernel itself, as a user who never
heard of OPENBLAS_CORETYPE gets it.

usage: bench/mlp_train.py [--loupe build/cli/loupe] [--rounds 3] [--memory-epochs 100]
                          [--levels avx512,avx2]   (default: every level this CPU runs but portable)
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


# Each level: OpenBLAS's kernel, ATen's capability, Loupe's automatic kernels there.
LEVELS = {
    "avx512": {"coretype": "SkylakeX", "aten": "avx512", "auto": "avx512"},
    "avx2": {"coretype": "Haswell", "aten": "avx2", "auto": "avx2"},
    "portable": {"coretype": "Nehalem", "aten": "default", "auto": "dense"},
}


def cpu_levels():
    """The levels this CPU runs, widest first (as Loupe's CPUID checks them)."""
    flags = set()
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    out = []
    if "avx512f" in flags:
        out.append("avx512")
    if "avx2" in flags and "fma" in flags:
        out.append("avx2")
    return out + ["portable"]


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


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


def loupe_epochs(loupe, tmp, kernels, extra=(), epochs=2):
    """Per-epoch seconds of one `loupe train-mlp` run on those kernels."""
    out = os.path.join(tmp, "loupe")
    env = dict(os.environ, LOUPE_MLP_KERNELS=kernels)
    subprocess.run([loupe, "train-mlp", "--epochs", str(epochs), "--out", out, "--quiet", *extra],
                   check=True, stderr=subprocess.DEVNULL, env=env)
    with open(os.path.join(out, "model.json")) as f:
        used = json.load(f)["training"]["kernels"]
    want = "dense" if "--dense" in extra else kernels
    if used != want:
        sys.exit(f"mlp_train.py: asked for the {want} kernels, model.json says {used}")
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


def run_level(args):
    """The child of one level: every contender, turn by turn; a JSON line of times."""
    level = LEVELS[args.level]
    x, y = load_images()
    contenders = [("loupe", lambda tmp: loupe_epochs(args.loupe, tmp, level["auto"])),
                  ("loupe-dense", lambda tmp: loupe_epochs(args.loupe, tmp, level["auto"], ["--dense"]))]
    if args.level == "portable":
        contenders.append(("loupe-portable", lambda tmp: loupe_epochs(args.loupe, tmp, "portable")))
    sk = SklearnEpochs(x, y)
    sk.epoch()  # the first partial_fit also sets the network up
    contenders.append(("sklearn", lambda tmp: [sk.epoch(), sk.epoch()]))
    if args.level != "portable":  # PyTorch is 15x behind already; spare the slowest level it
        th = TorchEpochs(x, y)
        contenders.append(("pytorch", lambda tmp: [th.epoch()]))
    times = {name: [] for name, _ in contenders}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            # Each turn starts after a pause: the peers' BLAS and OpenMP threads spin
            # (and yield) for a while after their last call, on the cores the next
            # contender needs.
            for name, turn in contenders:
                time.sleep(1.0)
                times[name] += turn(tmp)
    print("TIMES " + json.dumps({"blas": blas_kernel(), "times": times}))


def print_level(name, res, rounds):
    level = LEVELS[name]
    times = res["times"]
    print(f"\n== level {name}: OpenBLAS {res['blas']}, ATEN_CPU_CAPABILITY={level['aten']}, "
          f"Loupe's automatic kernels there: {level['auto']} ({rounds} rounds)")
    best = {k: min(v) for k, v in times.items()}
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"{'contender':<15} {'best s':>7} {'median s':>9}   {'Loupe is (best, median)':<24} epochs")
    for k in times:
        ratio = "" if k == "loupe" else f"{best[k] / best['loupe']:5.1f}x {med[k] / med['loupe']:5.1f}x"
        print(f"{k:<15} {best[k]:7.3f} {med[k]:9.3f}   {ratio:<24} {', '.join(f'{t:.3f}' for t in times[k])}")
    if level["auto"] == "dense":
        print("automatic choice: dense, the same configuration as --dense (the two rows differ by noise only)")
    else:
        ok = best["loupe"] <= best["loupe-dense"]
        print(f"automatic choice ({level['auto']}) vs --dense: {best['loupe-dense'] / best['loupe']:.2f}x "
              f"({'no slower: met' if ok else 'SLOWER: not met'})")
    if "sklearn" in times and name != "portable":
        r = best["sklearn"] / best["loupe"]
        print(f"Loupe vs sklearn at this level: {r:.1f}x best, {med['sklearn'] / med['loupe']:.1f}x median "
              f"(target 5x: {'met' if r >= 5 else 'not met'})")
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loupe", default="build/cli/loupe", help="the loupe binary")
    ap.add_argument("--rounds", type=int, default=3,
                    help="turns each contender takes (2 epochs a turn, PyTorch 1; default 3)")
    ap.add_argument("--memory-epochs", type=int, default=100,
                    help="epochs of the Loupe run whose peak memory is reported (0 skips it)")
    ap.add_argument("--levels", help="comma-separated levels to measure: avx512, avx2, portable "
                                     "(default: those this CPU runs, but portable)")
    ap.add_argument("--level", help=argparse.SUPPRESS)  # the child of one level
    ap.add_argument("--sklearn-only", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.loupe = os.path.abspath(args.loupe)
    if args.sklearn_only:
        # The reference run: sklearn under OpenBLAS's own kernel choice.
        x, y = load_images()
        sk = SklearnEpochs(x, y)
        secs = [sk.epoch() for _ in range(args.sklearn_only)]
        print(f"SKLEARN {min(secs)} {blas_kernel()}")
        return
    if args.level:
        run_level(args)
        return
    runs = cpu_levels()
    levels = args.levels.split(",") if args.levels else [lv for lv in runs if lv != "portable"]
    for lv in levels:
        if lv not in LEVELS:
            sys.exit(f"mlp_train.py: unknown level {lv!r} (avx512, avx2, portable)")
        if lv not in runs:
            sys.exit(f"mlp_train.py: this CPU cannot run the {lv} level")
    rss = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.memory_epochs:
            rss = loupe_peak_rss(args.loupe, args.memory_epochs, tmp)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, levels it runs: {', '.join(runs)}; "
          f"{N_TRAIN} samples, batch 32, lr 0.1, hidden {','.join(map(str, SIZES[1:-1]))}, relu")
    print(f"load average at the start: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    bests = {}
    for lv in levels:
        env = dict(os.environ, OPENBLAS_CORETYPE=LEVELS[lv]["coretype"], ATEN_CPU_CAPABILITY=LEVELS[lv]["aten"])
        child = subprocess.run([sys.executable, __file__, "--level", lv, "--rounds", str(args.rounds),
                                "--loupe", args.loupe], env=env, capture_output=True, text=True)
        line = [ln for ln in child.stdout.splitlines() if ln.startswith("TIMES ")]
        if child.returncode or not line:
            sys.exit(f"mlp_train.py: the {lv} level failed:\n{child.stdout}{child.stderr}")
        bests[lv] = print_level(lv, json.loads(line[0][6:]), args.rounds)
    top = levels[0]
    os.environ["OPENBLAS_CORETYPE"] = LEVELS[top]["coretype"]
    gemm = sgemm_in_child()
    gf = flops_per_epoch() / bests[top]["loupe"] / 1e9
    print(f"\nLoupe at {top}: {gf:.1f} GFLOP/s dense-equivalent ({flops_per_epoch() / 1e9:.1f} GFLOP an epoch if "
          f"no product with a 0 were skipped; --dense: {flops_per_epoch() / bests[top]['loupe-dense'] / 1e9:.1f}); "
          f"large SGEMM (4096^3, numpy, OpenBLAS {LEVELS[top]['coretype']}) on this machine: {gemm:.1f} GFLOP/s")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "ATEN_CPU_CAPABILITY")}
    ref = subprocess.run([sys.executable, __file__, "--sklearn-only", str(max(args.rounds, 2))], env=env,
                         capture_output=True, text=True)
    line = [ln for ln in ref.stdout.splitlines() if ln.startswith("SKLEARN ")]
    if line:
        secs, kernel = line[0].split(" ", 2)[1:]
        print(f"sklearn with OpenBLAS's own kernel choice ({kernel}), as a user gets it: best {float(secs):.3f} s, "
              f"Loupe at {top} is {float(secs) / bests[top]['loupe']:.1f}x")
    if rss:
        mb, wall, acc = rss
        print(f"Loupe {args.memory_epochs}-epoch run (automatic kernels): peak RSS {mb:.0f} MB, {wall:.0f} s wall, "
              f"test accuracy {100 * acc:.2f}%")


def sgemm_in_child():
    """Large-SGEMM GFLOP/s with the OPENBLAS_CORETYPE now in the environment."""
    code = "import sys; sys.path.insert(0, %r); import mlp_train; print(mlp_train.large_sgemm_gflops())" % (
        os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return float("nan")


if __name__ == "__main__":
    main()
