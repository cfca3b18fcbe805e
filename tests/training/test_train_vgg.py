"""Tests of training/train_vgg.py and training/export_vgg.py (pytest).

One tiny model is trained per session (VGG11 at width 1/4, one epoch on a
subset: about 15 s on 2 cores) and shared by the tests that read its folder.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TRAINING = os.path.join(ROOT, "training")
sys.path.insert(0, TRAINING)

import export_vgg  # noqa: E402
import fashion_mnist  # noqa: E402
import train_vgg  # noqa: E402

# Tests share 2 cores with other tests (ctest -j2): one thread each.
torch.set_num_threads(1)

TINY = ["--depth", "11", "--width", "0.25", "--epochs", "1",
        "--train-subset", "12000", "--val-subset", "1000",
        "--test-subset", "2000", "--threads", "1", "--quiet"]


def run(script, *args, timeout=300):
    return subprocess.run([sys.executable, os.path.join(TRAINING, script)]
                          + [str(a) for a in args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "vgg11-tiny"
    r = run("train_vgg.py", *TINY, "--out", out, "--name", "vgg11-tiny")
    assert r.returncode == 0, r.stderr
    return out


def load_json(path):
    with open(path) as f:
        return json.load(f)


# ==== The model folder ====

def test_tiny_run_writes_every_file(tiny):
    for f in ("model.json", "model.ts", "checkpoint.pt", "history.json",
              "metrics.json"):
        assert (tiny / f).is_file(), f


def test_manifest(tiny):
    m = load_json(tiny / "model.json")
    assert m["name"] == "vgg11-tiny"
    assert m["kind"] == "torchscript"
    assert m["classes"] == fashion_mnist.CLASSES
    inp = m["input"]
    assert (inp["channels"], inp["height"], inp["width"]) == (1, 32, 32)
    assert inp["resize"] == "pad"
    assert abs(inp["mean"][0] - 0.286) < 0.01
    assert abs(inp["std"][0] - 0.353) < 0.01
    ts = torch.jit.load(str(tiny / "model.ts"))
    children = list(ts.features.children())
    assert len(m["layers"]) == len(children) == 29  # VGG11 with BN
    for i, row in enumerate(m["layers"]):
        assert row["index"] == i and row["name"] == "features.%d" % i
    types = [r["type"] for r in m["layers"]]
    assert types[:4] == ["conv2d", "batchnorm2d", "relu", "maxpool2d"]
    assert m["layers"][0]["channels"] == 16  # 64 * 0.25
    assert m["layers"][-1]["channels"] == 128
    t = m["training"]
    assert t["recipe"] == "default"
    assert t["hyperparameters"]["depth"] == 11
    assert t["hyperparameters"]["width"] == 0.25
    assert t["split"]["train"] == 12000 and t["split"]["test"] == 2000
    assert t["device"] == "cpu" and t["seconds"] > 0
    assert t["torch"] == torch.__version__
    assert m["export"]["torch"] == torch.__version__


def test_metrics_consistent(tiny):
    m = load_json(tiny / "metrics.json")
    _, labels = fashion_mnist.load(fashion_mnist.DEFAULT_DIR, "test")
    counts = np.bincount(labels[:2000], minlength=10)
    c = np.array(m["confusion"])
    assert c.shape == (10, 10)
    assert (c.sum(1) == counts).all(), "confusion rows != class counts"
    assert m["n"] == 2000
    assert m["test_accuracy"] == pytest.approx(np.trace(c) / 2000)
    assert m["test_accuracy"] > 0.6, "one epoch should learn something"
    assert m["class_accuracy"] == pytest.approx(list(np.diag(c) / counts))
    for k, o in enumerate(m["one_vs_rest"]):
        assert o["class"] == fashion_mnist.CLASSES[k]
        assert o["tp"] == c[k, k]
        assert o["fn"] == c[k].sum() - c[k, k]
        assert o["fp"] == c[:, k].sum() - c[k, k]
        assert o["tp"] + o["fp"] + o["fn"] + o["tn"] == 2000
    mc = m["most_confused"]
    assert 0 < len(mc) <= 5
    counts_mc = [p["count"] for p in mc]
    assert counts_mc == sorted(counts_mc, reverse=True)
    off = c - np.diag(np.diag(c))
    assert counts_mc[0] == off.max()
    top = mc[0]
    i = fashion_mnist.CLASSES.index(top["true"])
    j = fashion_mnist.CLASSES.index(top["predicted"])
    assert i != j and c[i, j] == top["count"]


def test_history(tiny):
    h = load_json(tiny / "history.json")
    assert len(h["epochs"]) == 1
    e = h["epochs"][0]
    for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy",
              "seconds"):
        assert isinstance(e[k], float) and np.isfinite(e[k]), k
    assert 0 <= e["val_accuracy"] <= 1 and e["seconds"] > 0


def test_checkpoint_and_torchscript_agree(tiny):
    ck = export_vgg.load_checkpoint(str(tiny / "checkpoint.pt"))
    model = export_vgg.build(ck)
    ts = torch.jit.load(str(tiny / "model.ts"))
    x = torch.randn(5, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(ts(x), model(x), atol=1e-5)
    # Plain tensors and strings only: loads with weights_only.
    assert "state_dict" in ck and "config_json" in ck
    # ReLUs in the exported model are out of place.
    assert all(not getattr(m, "inplace", False)
               for m in model.features.children())


def test_export_cli(tiny, tmp_path):
    out = tmp_path / "exported"
    r = run("export_vgg.py", tiny / "checkpoint.pt", out, "--name", "re")
    assert r.returncode == 0, r.stderr
    assert (out / "model.ts").is_file()
    for f in ("history.json", "metrics.json"):
        assert (out / f).is_file(), f
    m = load_json(out / "model.json")
    assert m["name"] == "re" and m["export"]["method"] == "script"
    a = torch.jit.load(str(out / "model.ts"))
    b = torch.jit.load(str(tiny / "model.ts"))
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_export_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    r = run("export_vgg.py", bad, tmp_path / "out")
    assert r.returncode != 0
    assert "not a train_vgg.py checkpoint" in r.stderr


# ==== Distributed ====

def test_ddp_two_processes_identical_weights(tmp_path):
    out = tmp_path / "ddp"
    r = run("train_vgg.py", "--depth", "11", "--width", "0.125",
            "--epochs", "2", "--train-subset", "1024", "--val-subset", "256",
            "--test-subset", "256", "--nproc", "2", "--quiet", "--out", out)
    assert r.returncode == 0, r.stderr
    t = load_json(out / "model.json")["training"]
    assert t["world_size"] == 2
    assert t["ddp"]["backend"] == "gloo"
    assert t["ddp"]["max_param_diff_across_ranks"] == 0.0
    # Each rank saw half of each global batch of 128.
    assert t["hyperparameters"]["steps"] == 2 * (1024 // 2 // 64)
    assert sum(sum(r) for r in load_json(out / "metrics.json")["confusion"]) \
        == 256


# ==== Refusals (in-process: no torch start-up per case) ====

def main_fails(capsys, script_main, *args):
    """Run a script's main in this process; return its stderr (must fail)."""
    try:
        rc = script_main([str(a) for a in args])
    except SystemExit as e:
        rc = e.code
    assert rc not in (0, None)
    return capsys.readouterr().err


def test_seed_recipe_needs_pretrained(capsys):
    err = main_fails(capsys, train_vgg.main, "--recipe", "seed")
    assert "--pretrained" in err and "frozen" in err


@pytest.mark.parametrize("what", ["https://example.invalid/vgg16.pth",
                                  "imagenet", "DEFAULT"])
def test_download_is_an_error(capsys, what):
    err = main_fails(capsys, train_vgg.main, "--recipe", "seed",
                     "--pretrained", what)
    assert "download" in err


def test_missing_pretrained_file(capsys, tmp_path):
    err = main_fails(capsys, train_vgg.main, "--recipe", "seed",
                     "--pretrained", tmp_path / "nope.pth")
    assert "no such file" in err


def test_bad_pretrained_file(capsys, tmp_path):
    bad = tmp_path / "small.pth"
    torch.save({"features.0.weight": torch.zeros(3, 3, 3, 3)}, bad)
    err = main_fails(capsys, train_vgg.main, "--recipe", "seed",
                     "--pretrained", bad, "--train-subset", "2",
                     "--val-subset", "2", "--test-subset", "2",
                     "--out", tmp_path / "o")
    assert "shapes differ" in err or "missing" in err


def test_bad_data_dir(capsys, tmp_path):
    err = main_fails(capsys, train_vgg.main, "--data", tmp_path,
                     "--epochs", "1", "--out", tmp_path / "o")
    assert "train-images-idx3-ubyte.gz" in err


@pytest.mark.parametrize("argv", [["--width", "0"], ["--epochs", "0"],
                                  ["--val-fraction", "1"],
                                  ["--input-size", "28"], ["--nproc", "0"]])
def test_bad_options(capsys, argv):
    main_fails(capsys, train_vgg.main, *argv)


@pytest.mark.parametrize("script", ["train_vgg.py", "export_vgg.py"])
def test_help(script):
    r = run(script, "--help")
    assert r.returncode == 0 and "usage" in r.stdout


# ==== Pieces ====

def test_schedule_limits():
    """Which of steps and the clock end the schedule, as --help says."""
    def limits(*argv):
        a = train_vgg.parse_args(list(argv))
        return a.epochs, a.budget_minutes, a.budget_default
    # the default recipe: 24 epochs, and on CPU the clock too (set with the device)
    assert limits() == (24, None, True)
    assert limits("--epochs", "5") == (5, None, False)
    assert limits("--budget-minutes", "3") == (0, 3.0, False)  # the clock alone
    assert limits("--budget-minutes", "3", "--epochs", "5") == (5, 3.0, False)
    a = train_vgg.parse_args([])
    train_vgg.setup_device(a, train_vgg.Dist())
    assert a.budget_minutes == train_vgg.CPU_BUDGET_MINUTES
    a = train_vgg.parse_args(["--epochs", "2"])
    train_vgg.setup_device(a, train_vgg.Dist())
    assert a.budget_minutes is None
    torch.set_num_threads(1)  # setup_device set it to the cores


@pytest.mark.parametrize("epochs", [None, 50])
def test_budget_ends_the_schedule_annealed(tmp_path, epochs):
    """A 6-second budget stops a run long before 50 epochs, at the end of
    its schedule (without warm-up a step-driven schedule would still be near
    its peak of 0.1 then); the checkpoint records the limits it ran under."""
    out = tmp_path / "budget"
    extra = ["--epochs", epochs] if epochs else []
    r = run("train_vgg.py", "--depth", "11", "--width", "0.125",
            "--train-subset", "6000", "--val-subset", "200",
            "--test-subset", "200", "--threads", "1", "--quiet",
            "--budget-minutes", "0.1", "--warmup", "0", "--no-export",
            "--out", out, *extra)
    assert r.returncode == 0, r.stderr
    hist = load_json(out / "history.json")["epochs"]
    assert 1 <= len(hist) < 50
    assert hist[-1]["elapsed"] < 0.1 * 60 + 30  # stopped by the clock
    assert hist[-1]["lr"] < 0.1 * 0.1  # the one-cycle's annealed end
    ck = torch.load(out / "checkpoint.pt", map_location="cpu")
    hyper = json.loads(ck["manifest_json"])["training"]["hyperparameters"]
    assert hyper["budget_minutes"] == 0.1 and hyper["epochs"] == epochs

def test_onecycle_schedule():
    args = train_vgg.parse_args(["--epochs", "3"])
    lrs = [train_vgg.lr_at(args, p / 100) for p in range(101)]
    peak = max(lrs)
    assert peak == pytest.approx(args.lr, rel=1e-3)
    assert lrs[0] == pytest.approx(args.lr / 25)
    assert lrs[-1] == pytest.approx(args.lr / 1e4)
    top = lrs.index(peak)
    assert all(a <= b for a, b in zip(lrs[:top], lrs[1:top + 1]))
    assert all(a >= b for a, b in zip(lrs[top:], lrs[top + 1:]))


def test_augment_shapes_and_content():
    args = train_vgg.parse_args(["--erase", "1"])
    pre = train_vgg.Preprocess(args, [0.286], [0.353], torch.device("cpu"))
    imgs = torch.randint(0, 256, (16, 28, 28), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    x = pre(imgs, train=True, gen=g)
    assert x.shape == (16, 1, 32, 32)
    y = pre(imgs)
    # Without augmentation: a centred copy with a black 2-pixel frame.
    ref = (F_pad(imgs) / 255.0 - 0.286) / 0.353
    assert torch.allclose(y, ref, atol=1e-6)
    assert not torch.allclose(x, y)


def F_pad(imgs):
    return torch.nn.functional.pad(imgs.float().unsqueeze(1), (2, 2, 2, 2))


def test_idx_reader_rejects_bad_files(tmp_path):
    p = tmp_path / "bad.idx"
    p.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(ValueError, match="payload"):
        fashion_mnist.read_idx(str(p))
    p.write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="magic"):
        fashion_mnist.read_idx(str(p))
    p.write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd")
    with pytest.raises(ValueError, match="unsigned"):
        fashion_mnist.read_idx(str(p))


def test_split_is_seeded_and_disjoint():
    a_tr, a_va = fashion_mnist.split(60000, 0.1, 1)
    b_tr, b_va = fashion_mnist.split(60000, 0.1, 1)
    c_tr, _ = fashion_mnist.split(60000, 0.1, 2)
    assert len(a_tr) == 54000 and len(a_va) == 6000
    assert (a_tr == b_tr).all() and (a_va == b_va).all()
    assert not (a_tr == c_tr).all()
    assert len(np.intersect1d(a_tr, a_va)) == 0


# ==== Saliency sanity (Adebayo et al. 2018) ====

# The sanity check's own statistics (training/sanity_check.py), tested here too.
from sanity_check import rankdata, spearman  # noqa: E402


def test_spearman():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(x, x ** 3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert list(rankdata([10, 20, 20, 5])) == [2.0, 3.5, 3.5, 1.0]
    # Hand-computed: ranks [1, 2.5, 2.5, 4] vs [1, 2, 3, 4].
    a, b = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4.0])
    a, b = a - a.mean(), b - b.mean()
    want = (a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())
    assert spearman([1, 5, 5, 9], [1, 2, 3, 4]) == pytest.approx(want)


def test_saliency_sanity(tiny):
    """Vanilla backprop maps depend on the learned weights and on the class.

    Over 24 test images: the mean Spearman correlation between the trained
    model's |gradient| map and that of the same network re-initialised is
    below 0.5 (model randomisation test), and between the maps of the
    predicted class and the runner-up class below 0.9."""
    ts = torch.jit.load(str(tiny / "model.ts"))
    ck = export_vgg.load_checkpoint(str(tiny / "checkpoint.pt"))
    torch.manual_seed(1234)
    rand = train_vgg.VGG(export_vgg.config_of(ck)).eval()
    inp = export_vgg.manifest_of(ck)["input"]
    images, _ = fashion_mnist.load(fashion_mnist.DEFAULT_DIR, "test")
    x = (F_pad(torch.from_numpy(images[:24].copy())) / 255.0
         - inp["mean"][0]) / inp["std"][0]

    def saliency(model, xb, cls):
        # Eval-mode BN: images are independent, so one backward pass of the
        # summed scores gives every image's own gradient.
        xb = xb.clone().requires_grad_(True)
        score = model(xb).gather(1, cls.view(-1, 1)).sum()
        return torch.autograd.grad(score, xb)[0].abs().numpy()

    with torch.no_grad():
        top2 = ts(x).topk(2, dim=1).indices
    trained = saliency(ts, x, top2[:, 0])
    randomised = saliency(rand, x, top2[:, 0])
    runner_up = saliency(ts, x, top2[:, 1])
    vs_random = [spearman(a, b) for a, b in zip(trained, randomised)]
    vs_class = [spearman(a, b) for a, b in zip(trained, runner_up)]
    assert np.mean(vs_random) < 0.5, vs_random
    assert np.mean(vs_class) < 0.9, vs_class
