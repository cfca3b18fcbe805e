"""`loupe train-mlp` and `loupe eval` end to end on the real dataset, kept short.

Checks: one epoch of relu reaches over 70% test accuracy (a broken trainer stays
near 10%); two runs with one seed give bit-identical weights, another seed does
not; every file of the model folder is there and consistent; checkpoints are
loadable folders of their own; a forced divergence (lr 50) stops at once with a
one-sentence message naming the epoch and batch, keeps finite weights and
records the event; --keep-going trains on regardless; eval recomputes the same
metrics; bad options are refused.
Run by CTest: test_train_cli.py LOUPE_BINARY
"""
import json
import math
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "training"))
import safetensors_np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
import loupe_fixture as fx  # noqa: E402

LOUPE = sys.argv[1]
FAILED = []


def run(*args, expect=0, env=None):
    p = subprocess.run([LOUPE, *args], capture_output=True, text=True,
                       env=dict(os.environ, **env) if env else None)
    assert p.returncode == expect, f"{args}: exit {p.returncode}, expected {expect}\n{p.stderr}"
    return p


def case(fn):
    try:
        fn()
        print(f"ok   {fn.__name__}")
    except AssertionError as e:
        FAILED.append(fn.__name__)
        print(f"FAIL {fn.__name__}: {e}")
    return fn


def load_json(d, name):
    with open(os.path.join(d, name)) as f:
        return json.load(f)


TMP = tempfile.mkdtemp(prefix="loupe-train-")


@case
def one_epoch_learns_and_writes_a_consistent_folder():
    out = os.path.join(TMP, "relu1")
    run("train-mlp", "--epochs", "1", "--out", out, "--seed", "3", "--checkpoint-at", "1")
    for f in ("model.json", "weights.safetensors", "history.json", "metrics.json"):
        assert os.path.isfile(os.path.join(out, f)), f
    m = load_json(out, "metrics.json")
    assert m["test_accuracy"] > 0.70, m["test_accuracy"]
    conf = m["confusion"]
    assert m["n"] == 10000 and sum(map(sum, conf)) == 10000
    for c in range(10):
        row = sum(conf[c])
        assert row == 1000, row  # the official test set has 1,000 of each class
        assert math.isclose(m["class_accuracy"][c], conf[c][c] / row)
        o = m["one_vs_rest"][c]
        assert o["tp"] == conf[c][c] and o["tp"] + o["fn"] == row
        assert o["tp"] + o["fp"] == sum(conf[r][c] for r in range(10))
        assert o["tp"] + o["fp"] + o["fn"] + o["tn"] == 10000
    assert math.isclose(m["test_accuracy"], sum(conf[c][c] for c in range(10)) / 10000)
    man = load_json(out, "model.json")
    assert man["kind"] == "mlp" and man["name"] == "relu1" and len(man["classes"]) == 10
    assert man["mlp"] == {"activation": "relu", "sizes": [784, 256, 128, 64, 32, 10]}
    assert man["training"]["split"] == {"kind": "default", "seed": 0, "train": 54000, "val": 6000, "test": 10000}
    h = load_json(out, "history.json")
    assert len(h["epochs"]) == 1 and h["epochs"][0]["epoch"] == 1 and h["stopped"] is None
    for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"):
        assert isinstance(h["epochs"][0][k], float), k
    w = safetensors_np.load(os.path.join(out, "weights.safetensors"))
    assert w["layers.0.weight"].shape == (256, 784) and w["layers.4.bias"].shape == (10,)
    ck = os.path.join(out, "checkpoints", "epoch-1")
    assert load_json(ck, "model.json")["name"] == "relu1-epoch-1"
    assert load_json(ck, "metrics.json")["test_accuracy"] == m["test_accuracy"]
    # eval recomputes exactly what the trainer wrote.
    p = run("eval", out, "--dry-run")
    assert f"{100 * m['test_accuracy']:.2f}%" in p.stdout, p.stdout
    os.remove(os.path.join(out, "metrics.json"))
    run("eval", out)
    assert load_json(out, "metrics.json")["confusion"] == conf


@case
def same_seed_gives_bit_identical_weights():
    # Any number of threads: the GEMMs are cut into the same chunks whoever runs them.
    weights = []
    for name, seed, threads in (("a", "5", "1"), ("b", "5", "2"), ("c", "6", "2")):
        out = os.path.join(TMP, "seed-" + name)
        run("train-mlp", "--epochs", "1", "--train-limit", "6000", "--out", out, "--seed", seed,
            "--activation", "tanh", "--threads", threads)
        with open(os.path.join(out, "weights.safetensors"), "rb") as f:
            weights.append(f.read())
    assert weights[0] == weights[1], "two runs with seed 5 (1 and 2 threads) differ"
    assert weights[0] != weights[2], "seeds 5 and 6 gave the same weights"


@case
def divergence_is_detected_and_reported():
    out = os.path.join(TMP, "diverge")
    p = run("train-mlp", "--epochs", "3", "--lr", "50", "--activation", "linear", "--out", out,
            "--train-limit", "3000", expect=3)
    msg = [l for l in p.stderr.splitlines() if "diverged" in l]
    assert msg and "epoch 1, batch" in msg[0] and "--lr" in msg[0], p.stderr
    h = load_json(out, "history.json")
    assert h["stopped"] == "diverged"
    ev = h["events"][0]
    assert ev["kind"] == "diverged" and ev["epoch"] == 1 and ev["batch"] >= 1
    w = safetensors_np.load(os.path.join(out, "weights.safetensors"))
    assert all(map(lambda a: bool((a == a).all()) and abs(a).max() < float("inf"), w.values())), "kept weights are not finite"
    # --keep-going trains on through the NaNs, as the seed's loop did: accuracy collapses to chance.
    out2 = os.path.join(TMP, "diverge-on")
    run("train-mlp", "--epochs", "2", "--lr", "50", "--activation", "linear", "--out", out2,
        "--train-limit", "3000", "--keep-going")
    h2 = load_json(out2, "history.json")
    assert h2["stopped"] is None and len(h2["epochs"]) == 2
    assert h2["epochs"][-1]["val_loss"] is None  # NaN is written as null


@case
def weight_average_is_the_mean_of_the_epochs():
    out = os.path.join(TMP, "avg")
    run("train-mlp", "--epochs", "4", "--average-from", "2", "--checkpoint-at", "1,2,3,4", "--out", out,
        "--train-limit", "4000", "--seed", "2")
    h = load_json(out, "history.json")
    assert [e["avg_val_accuracy"] is None for e in h["epochs"]] == [True, False, False, False]
    kept = h["kept"]
    w = safetensors_np.load(os.path.join(out, "weights.safetensors"))
    ck = {e: safetensors_np.load(os.path.join(out, "checkpoints", f"epoch-{e}", "weights.safetensors"))
          for e in (1, 2, 3, 4)}
    if kept["weights"] == "average":
        assert kept["average_from"] == 2
        for k in w:
            mean = sum(ck[e][k].astype("float64") for e in range(2, kept["epoch"] + 1)) / (kept["epoch"] - 1)
            assert abs(w[k] - mean).max() < 1e-5, k
    else:
        for k in w:
            assert (w[k] == ck[kept["epoch"]][k]).all(), k
    # The chosen candidate has the best validation accuracy of all of them.
    best = max(max(e["val_accuracy"], e["avg_val_accuracy"] or 0) for e in h["epochs"])
    e = h["epochs"][kept["epoch"] - 1]
    assert (e["avg_val_accuracy"] if kept["weights"] == "average" else e["val_accuracy"]) == best
    # --average-from 0 turns it off; --keep-last keeps the last epoch exactly.
    out0 = os.path.join(TMP, "avg0")
    run("train-mlp", "--epochs", "4", "--average-from", "0", "--keep-last", "--out", out0,
        "--train-limit", "4000", "--seed", "2")
    h0 = load_json(out0, "history.json")
    assert all(e["avg_val_accuracy"] is None for e in h0["epochs"]) and h0["kept"]["weights"] == "epoch"
    w0 = safetensors_np.load(os.path.join(out0, "weights.safetensors"))
    assert all((w0[k] == ck[4][k]).all() for k in w0), "same seed, same epoch 4, other weights"


@case
def bad_options_are_refused():
    for args in (["--lr", "-1"], ["--activation", "swish"], ["--hidden", "256,x"], ["--split", "odd"],
                 ["--epochs", "0"], ["--bogus"]):
        p = run("train-mlp", *args, expect=2)
        assert p.stderr.strip(), args
    p = run("train-mlp", "--data", "/nonexistent", "--epochs", "1", "--out", os.path.join(TMP, "x"), expect=1)
    assert "cannot open" in p.stderr
    p = run("eval", "/nonexistent", expect=1)
    assert "model.json" in p.stderr
    assert "--checkpoint-at" in run("train-mlp", "--help").stdout


def cpu_kernels():
    """The MLP kernels this CPU can run, from /proc/cpuinfo (not from loupe itself)."""
    with open("/proc/cpuinfo") as f:
        flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    out = ["avx512"] if "avx512f" in flags else []
    if "avx2" in flags and "fma" in flags:
        out.append("avx2")
    return out + ["portable", "dense"]


@case
def every_kernel_the_cpu_runs_trains_the_same_model():
    """LOUPE_MLP_KERNELS forces each path: model.json and the progress line name
    it; AVX2 and AVX-512 give bit-identical weights, portable C and dense BLAS
    the same model up to rounding; serving (`loupe predict`) agrees on every path."""
    runs = cpu_kernels()
    weights, probs = {}, {}
    img = os.path.join(TMP, "shoe.png")
    with open(img, "wb") as f:
        f.write(fx.png_gray(fx.test_set()[0][0]))  # the first test image, an ankle boot
    for k in runs:
        out = os.path.join(TMP, "k-" + k)
        p = run("train-mlp", "--epochs", "1", "--train-limit", "3000", "--hidden", "64,32", "--seed", "4",
                "--out", out, "--quiet", env={"LOUPE_MLP_KERNELS": k})
        assert f"kernels {k}," in p.stderr, p.stderr
        assert load_json(out, "model.json")["training"]["kernels"] == k
        weights[k] = safetensors_np.load(os.path.join(out, "weights.safetensors"))
        probs[k] = json.loads(run("predict", out, img, env={"LOUPE_MLP_KERNELS": k}).stdout)["probabilities"]
    ref = weights["dense"]
    for k in runs:
        worst = max(float(abs(weights[k][n] - ref[n]).max()) for n in ref)
        assert worst < 1e-3, f"{k}: weights differ from dense ones by {worst}"
        worst = max(abs(a - b) for a, b in zip(probs[k], probs["dense"]))
        assert worst < 1e-3, f"{k}: predict differs from dense by {worst}"
    if "avx512" in runs:
        assert all((weights["avx512"][n] == weights["avx2"][n]).all() for n in ref), "avx2 is not avx512's bits"
    # the same model served by each path gives the same answer up to rounding
    served = os.path.join(TMP, "k-" + runs[0])
    for k in runs:
        got = json.loads(run("predict", served, img, env={"LOUPE_MLP_KERNELS": k}).stdout)["probabilities"]
        worst = max(abs(a - b) for a, b in zip(got, probs[runs[0]]))
        assert worst < 1e-5, f"{k} serving {runs[0]}'s model differs by {worst}"


@case
def bad_kernel_choices_are_refused():
    p = run("train-mlp", "--epochs", "1", "--out", os.path.join(TMP, "bad"), expect=2,
            env={"LOUPE_MLP_KERNELS": "sse9"})
    assert "LOUPE_MLP_KERNELS is 'sse9'" in p.stderr, p.stderr
    assert not os.path.exists(os.path.join(TMP, "bad"))
    for k in ("avx512", "avx2"):
        if k not in cpu_kernels():  # a CPU without it: a clear refusal, never SIGILL
            p = run("serve", env={"LOUPE_MLP_KERNELS": k}, expect=2)
            assert "this CPU cannot run the " + k in p.stderr, p.stderr
    v = run("--version", env={"LOUPE_MLP_KERNELS": "portable"}).stdout
    assert "mlp kernels: portable (LOUPE_MLP_KERNELS;" in v, v


print(f"{7 - len(FAILED)} passed, {len(FAILED)} failed")
sys.exit(1 if FAILED else 0)
