"""`training/reproduce.py --quick` end to end into a temporary folder.

Checks that every table, figure and finding is present and consistent with the
runs' own files: confusion-matrix rows sum to the test set's class counts (read
independently from the IDX labels), class accuracies match the diagonal, the
tables hold the checkpoints' and sklearn's own accuracies, the named best model
has the highest accuracy, the findings match the matrix, and a second
invocation reuses the finished runs.
Run by CTest: test_reproduce.py LOUPE_BINARY
"""
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "..", "..", "training", "reproduce.py")
DATA = "/usr/share/datasets/fashion-mnist"


def load(p):
    with open(p) as f:
        return json.load(f)


def main():
    loupe = sys.argv[1]
    out = tempfile.mkdtemp(prefix="loupe-reproduce-")
    t0 = time.time()
    subprocess.run([sys.executable, DRIVER, "--quick", "--out", out, "--loupe", loupe], check=True)
    first = time.time() - t0
    rep = load(os.path.join(out, "report.json"))
    md = open(os.path.join(out, "report.md")).read()
    runs = os.path.join(out, "runs")
    checks = 0

    # Figures: every one named is referenced and is a real PNG.
    expected = {f"mlp_loss_{a}.png" for a in ("sigmoid", "tanh", "relu", "linear")} | \
               {f"loupe_vs_sklearn_{a}.png" for a in ("sigmoid", "tanh", "relu", "linear")} | \
               {"vgg_default_curves.png", "vgg_default_confusion.png", "vgg_default_one_vs_rest.png",
                "input_pullover.png", "vgg_default_conv5_1_filter1.png", "vgg_default_saliency_pullover.png",
                "vgg_default_filter5_every_conv.png"}
    assert expected <= set(rep["figures"]), expected - set(rep["figures"])
    for name in rep["figures"]:
        with open(os.path.join(out, "figures", name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
        assert f"(figures/{name})" in md, name
        checks += 1

    # The MLP table holds the checkpoints' and sklearn's own accuracies, beside the seed's.
    c50, c100 = rep["checkpoints"]
    table = rep["tables"]["mlp"]
    for act in ("sigmoid", "tanh", "relu", "linear"):
        sk = load(os.path.join(runs, f"sklearn-{act}.json"))
        for e in (c50, c100):
            m = load(os.path.join(runs, f"mlp-{act}", "checkpoints", f"epoch-{e}", "metrics.json"))
            assert table[act][f"mine_{e}"] == m["test_accuracy"], (act, e)
            assert table[act][f"sklearn_{e}"] == sk["test_accuracy"][str(e)], (act, e)
            assert f"{100 * m['test_accuracy']:.2f}%" in md
            checks += 2
        assert len(sk["loss_curve"]) >= 1
    assert "| sigmoid | " in md and "(88.32%)" in md  # the seed's sklearn_50 sigmoid, from seed_results.json
    best = max((v, a, c) for a, r in table.items() for c, v in r.items())
    assert (rep["best"]["test_accuracy"], rep["best"]["activation"], rep["best"]["column"]) == best
    assert "Best model:" in md
    lin = load(os.path.join(runs, "sklearn-linear.json"))
    assert lin["errors"] or lin["first_nonfinite_iteration"] is None  # a divergence is recorded, not hidden
    assert os.path.isfile(os.path.join(runs, "sklearn-linear-lr0.001.json"))

    # VGG: the confusion matrix against the test labels read here, and the findings against it.
    m = load(os.path.join(runs, "vgg-default", "metrics.json"))
    conf = np.array(m["confusion"])
    n = int(conf.sum())
    with gzip.open(os.path.join(DATA, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    assert list(conf.sum(axis=1)) == list(np.bincount(labels, minlength=10)), "rows != class counts"
    diag = np.diag(conf) / conf.sum(axis=1)
    assert np.allclose(m["class_accuracy"], diag)
    assert np.isclose(m["test_accuracy"], np.trace(conf) / n)
    f = rep["findings"]["vgg_default"]
    classes = m.get("classes")
    assert f["most_accurate"]["accuracy"] == max(diag) and f["least_accurate"]["accuracy"] == min(diag)
    assert diag[classes.index(f["most_accurate"]["class"])] == max(diag)
    fn = conf.sum(axis=1) - np.diag(conf)
    fp = conf.sum(axis=0) - np.diag(conf)
    assert f["most_false_negatives"]["count"] == fn.max() and f["most_false_positives"]["count"] == fp.max()
    for i, row in enumerate(f["most_confused_with"]):
        off = [conf[i, j] if j != i else -1 for j in range(10)]
        assert row["count"] == max(off) and conf[i, classes.index(row["confused_with"])] == max(off)
    for line in ("Most accurately identified", "Least accurately identified", "Most false negatives",
                 "Most false positives", "most-confused class"):
        assert line in md, line
    checks += 10

    # The theory section and the provenance.
    assert "KL(y ‖ p)" in md and "H(p)" in md
    assert rep["machine"]["cores"] == os.cpu_count() and rep["commit"]
    assert all(r["seconds"] is not None for r in rep["runs"])

    # Resuming: a second run reuses every finished run (and says so) instead of training again.
    def stamps():
        out = {}
        for name in os.listdir(runs):
            p = os.path.join(runs, name, "metrics.json") if os.path.isdir(os.path.join(runs, name)) \
                else os.path.join(runs, name)
            out[name] = os.path.getmtime(p)
        return out
    before = stamps()
    again = subprocess.run([sys.executable, DRIVER, "--quick", "--out", out, "--loupe", loupe], check=True,
                           capture_output=True, text=True)
    assert stamps() == before, "a finished run was trained again"
    reused = [l for l in again.stderr.splitlines() if ": reusing " in l]
    assert len(reused) == len(before), again.stderr
    print(f"ok   reproduce --quick: {checks} consistency checks ({first:.0f} s), and a resume that reused "
          f"all {len(reused)} runs")
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
