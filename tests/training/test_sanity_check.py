"""`loupe sanity-check` (training/sanity_check.py) end to end, small (pytest).

A VGG11 at width 1/16 written at its initialisation (the cascade only needs a
checkpoint; training would cost the test most of its minute) and a one-epoch
MLP of `loupe train-mlp`, three test images, every method through a real
daemon. Checks the shape of sanity_results.json, the markers of --doc, that
step 0 correlates 1.0 with itself and that the fully randomised models'
gradient maps correlate less.

    LOUPE_BIN=build/cli/loupe /usr/bin/python3 -m pytest \
        tests/training/test_sanity_check.py
"""

import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TRAINING = os.path.join(ROOT, "training")
sys.path.insert(0, TRAINING)

import export_vgg  # noqa: E402
import fashion_mnist  # noqa: E402
import sanity_check  # noqa: E402
from vgg import VGG  # noqa: E402

LOUPE = os.path.abspath(os.environ.get("LOUPE_BIN", "build/cli/loupe"))
CNN_STEPS = 9   # VGG11: 8 convolutions and one linear layer
MLP_STEPS = 2   # hidden 16: two dense layers


def tiny_vgg(folder):
    """A checkpoint.pt as train_vgg.py writes it, of an untrained VGG11."""
    torch.manual_seed(7)
    config = {"depth": 11, "width": 0.0625}
    model = VGG(config)
    manifest = {"name": "tiny", "kind": "torchscript",
                "classes": fashion_mnist.CLASSES,
                "input": {"channels": 1, "height": 32, "width": 32,
                          "mean": [0.286], "std": [0.353], "resize": "pad"},
                "training": {}}
    os.makedirs(folder)
    torch.save(export_vgg.make_checkpoint(model, model.config, manifest),
               os.path.join(folder, "checkpoint.pt"))


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sanity")
    tiny_vgg(str(tmp / "cnn"))
    subprocess.run([LOUPE, "train-mlp", "--epochs", "1", "--hidden", "16",
                    "--threads", "1", "--out", str(tmp / "mlp")],
                   check=True, stdout=subprocess.DEVNULL, timeout=120)
    doc = tmp / "doc.md"
    doc.write_text("# Title\n\nbefore\n\n%s\nold text\n%s\n\nafter\n"
                   % (sanity_check.BEGIN, sanity_check.END))
    env = dict(os.environ, LOUPE_PYTHON=sys.executable)
    r = subprocess.run([LOUPE, "sanity-check", "--cnn", str(tmp / "cnn"),
                        "--mlp", str(tmp / "mlp"), "--images", "3",
                        "--jobs", "1", "--out", str(tmp / "out"),
                        "--doc", str(doc), "--quiet"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    with open(tmp / "out" / "sanity_results.json") as f:
        return tmp, json.load(f), doc.read_text()


def test_shape(result):
    tmp, res, _ = result
    assert res["images"]["count"] == 3
    assert res["warnings"] == []
    for kind, steps, methods in (("cnn", CNN_STEPS, sanity_check.CNN_METHODS),
                                 ("mlp", MLP_STEPS, sanity_check.MLP_METHODS)):
        fam = res["models"][kind]
        assert len(fam["steps"]) == steps + 1
        assert fam["steps"][0]["randomised"] is None
        assert len(fam["steps"][-1]["layers"]) == steps
        assert list(fam["methods"]) == list(methods)
        for m in methods:
            rows = fam["methods"][m]["steps"]
            assert len(rows) == steps + 1
            for r in rows + fam["methods"][m]["garment_steps"]:
                assert set(r) >= {"mean", "std", "median", "q25", "q75", "n",
                                  "constant_maps", "values"}
                assert len(r["values"]) == r["n"] <= 3
        assert len(fam["targets"]) == 3
    # Output first: the classifier, then the last convolution (its BN along).
    cnn = res["models"]["cnn"]["steps"]
    assert cnn[1]["randomised"] == "classifier.1"
    assert cnn[2]["randomised"] == "features.25"
    assert cnn[-1]["randomised"] == "features.0"
    assert res["models"]["mlp"]["steps"][1]["randomised"] == "layers.1"
    for f in ("sanity_curves.png", "sanity_maps_cnn.png",
              "sanity_maps_mlp.png"):
        with open(tmp / "out" / f, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n", f


def test_trained_against_itself_and_randomised(result):
    _, res, _ = result
    for kind in ("cnn", "mlp"):
        fam = res["models"][kind]
        for m, v in fam["methods"].items():
            first = v["steps"][0]
            if first["n"]:
                assert first["mean"] == pytest.approx(1.0), (kind, m)
        grad = fam["methods"]["gradient"]["steps"]
        assert grad[0]["n"] == 3
        assert grad[-1]["mean"] < 0.9, (kind, grad[-1])
        assert fam["steps"][0]["agreement"] == 1.0


def test_doc_markers(result):
    _, _, text = result
    assert text.startswith("# Title\n\nbefore\n\n" + sanity_check.BEGIN)
    assert text.endswith(sanity_check.END + "\n\nafter\n")
    assert "old text" not in text
    assert "| step | re-initialised down to |" in text
    assert "sanity_curves.png" in text


def test_spearman():
    s = sanity_check.spearman
    assert s([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert s([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert s([1, 1, 1], [1, 2, 3]) != s([1, 1, 1], [1, 2, 3])  # NaN
    assert list(sanity_check.rankdata([10, 20, 20, 5])) == [2, 3.5, 3.5, 1]
