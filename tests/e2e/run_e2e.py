"""End-to-end test of the browser page: a tiny trained MLP and a hand-made report behind the real
daemon, driven by headless Chromium (page.test.cjs, playwright-core); then a tiny VGG trained by
training/train_vgg.py (about a minute on 2 loaded cores) behind another daemon (cnn.test.cjs:
layers, the filter animation, feature maps, saliency, keyboard, alt texts, errors by their control);
then the explanation methods with that CNN and the MLP behind one daemon (explain.test.cjs: the
method picker, Grad-CAM's layer, the compare view, Grad-CAM refused for the MLP).

    LOUPE_BIN=build/cli/loupe NODE_PATH=<folder with node_modules/playwright-core> \\
        /usr/bin/python3 tests/e2e/run_e2e.py

CTest runs it after `npm ci` of tests/e2e/package-lock.json in the build folder (tests/e2e/CMakeLists.txt).
LOUPE_SCREENSHOTS (default: a temporary folder) receives explore.png, explore-drawn.png,
explore-gallery.png, explore-cnn.png, explore-compare.png (the compare view's card), training.png
and reports.png (`make screenshots` copies the README's to docs/img).
LOUPE_E2E_CNN=0 leaves out the CNN parts (CTest sets it for a build without libtorch).
LOUPE_E2E_ONLY=explain (a comma-separated list of page, token, cnn, explain) runs only those page
tests, for work on one of them; the default runs them all.
Nothing is skipped: a missing chromium, node or playwright-core is a failure.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import loupe_fixture as fx  # noqa: E402

LOUPE = os.environ.get("LOUPE_BIN", os.path.join(ROOT, "build", "cli", "loupe"))
CHROMIUM = os.environ.get("LOUPE_CHROMIUM", "/usr/bin/chromium")
MODEL = "mlp-e2e"
CNN = "cnn-e2e"
TANH = "mlp-tanh-e2e"
PYTHON = sys.executable


# A VGG16-BN at width 1/16 on 32x32, one epoch on 512 images: a real CNN in about a minute
# (test_cnn.py's tiny model). LOUPE_E2E_CNN_TRAIN replaces these options (make screenshots trains
# longer, so that its filters show more than noise).
CNN_TRAIN = ("--width 0.0625 --epochs 1 --train-subset 512 --val-subset 128 --test-subset 128 "
             "--threads 1 --quiet")


def train_cnn(out):
    opts = (os.environ.get("LOUPE_E2E_CNN_TRAIN") or CNN_TRAIN).split()
    subprocess.run([PYTHON, os.path.join(ROOT, "training", "train_vgg.py"), "--out", out] + opts,
                   check=True, stdout=subprocess.DEVNULL)


def run_page(node, script, what, models, daemon_args=(), daemon_env=None, upload=None, model=None, env=None,
             timeout=300):
    """One page test (a .cjs script) against a daemon serving models; exits on failure. With upload
    and model, the script gets in LOUPE_EXPECT_CLASS what the API predicts for that upload."""
    d = fx.Daemon(LOUPE, models, "--static", os.path.join(ROOT, "static"), "--drain-grace", "0", *daemon_args,
                  env=daemon_env)
    try:
        e = dict(os.environ, LOUPE_URL="http://127.0.0.1:%d/" % d.port, LOUPE_CHROMIUM=CHROMIUM, **(env or {}))
        if upload:
            with open(upload, "rb") as f:
                st, _, want = d.json("POST", "/v1/models/%s/predict" % model, f.read(), {"Content-Type": "image/png"})
            fx.require(st == 200, want)
            e["LOUPE_EXPECT_CLASS"] = want["class"]
        rc = subprocess.run([node, os.path.join(HERE, script)], env=e, timeout=timeout).returncode
    finally:
        drc = d.stop()
    if rc != 0 or drc != 0:
        print(d.read_log()[-4000:], file=sys.stderr)
        sys.exit("e2e: %s failed (exit %d, daemon %d)" % (what, rc, drc))


def run_cnn_pages(node, upload, reports, shots, mlp, only):
    """cnn.test.cjs against a daemon serving only the tiny CNN, then explain.test.cjs against one
    serving the CNN, the MLP folder mlp (a copy) and a tanh MLP; exits on failure."""
    models = os.path.join(os.path.dirname(upload), "cnn-models")
    train_cnn(os.path.join(models, CNN))
    if "cnn" in only:
        run_page(node, "cnn.test.cjs", "the CNN page test", models, ("--reports", reports), upload=upload, model=CNN,
                 env={"LOUPE_UPLOAD": upload, "LOUPE_CNN": CNN, "LOUPE_SCREENSHOTS": shots})
    if "explain" in only:
        shutil.copytree(mlp, os.path.join(models, MODEL))
        # A tanh MLP, for which guided backprop is not defined: small, trained in a second.
        subprocess.run([LOUPE, "train-mlp", "--epochs", "1", "--train-limit", "1000", "--hidden", "32", "--activation",
                        "tanh", "--out", os.path.join(models, TANH)], check=True, stdout=subprocess.DEVNULL)
        run_page(node, "explain.test.cjs", "the explanation page test", models, upload=upload, model=CNN,
                 env={"LOUPE_UPLOAD": upload, "LOUPE_CNN": CNN, "LOUPE_MODEL": MODEL, "LOUPE_TANH": TANH,
                      "LOUPE_SCREENSHOTS": shots})


def main():
    for what, path in (("loupe", LOUPE), ("chromium (Debian package chromium)", CHROMIUM)):
        if not os.access(path, os.X_OK):
            sys.exit("e2e: %s not found at %s" % (what, path))
    node = shutil.which("node")
    if not node:
        sys.exit("e2e: node not found (Debian package nodejs)")
    only = set((os.environ.get("LOUPE_E2E_ONLY") or "page,token,cnn,explain").split(","))
    tmp = tempfile.mkdtemp(prefix="loupe-e2e-")
    shots = os.environ.get("LOUPE_SCREENSHOTS") or os.path.join(tmp, "screenshots")
    os.makedirs(shots, exist_ok=True)
    try:
        models = os.path.join(tmp, "models")
        subprocess.run([LOUPE, "train-mlp", "--epochs", "1", "--train-limit", "3000", "--out",
                        os.path.join(models, MODEL)], check=True, stdout=subprocess.DEVNULL)
        reports = os.path.join(tmp, "reports")
        fx.make_report(os.path.join(reports, "seed-reproduction-quick"))
        # The upload: the first test image (an ankle boot) enlarged to 112x112, so the page's
        # preview and the server's resize both have work to do.
        images, _ = fx.test_set()
        upload = os.path.join(tmp, "boot.png")
        with open(upload, "wb") as f:
            f.write(fx.png_gray(np.kron(images[0], np.ones((4, 4), np.uint8))))
        if "page" in only:
            run_page(node, "page.test.cjs", "the page test", models, ("--reports", reports), upload=upload, model=MODEL,
                     env={"LOUPE_UPLOAD": upload, "LOUPE_MODEL": MODEL, "LOUPE_SCREENSHOTS": shots,
                          "LOUPE_MODELS": models})
        # The page with --api-token: it asks for the token, then works.
        if "token" in only:
            run_page(node, "token.test.cjs", "the API-token page test", models,
                     daemon_env={"LOUPE_API_TOKEN": "e2e-token"},
                     env={"LOUPE_MODEL": MODEL, "LOUPE_TOKEN": "e2e-token"}, timeout=120)
        if os.environ.get("LOUPE_E2E_CNN", "1") == "1":
            if only & {"cnn", "explain"}:
                run_cnn_pages(node, upload, reports, shots, os.path.join(models, MODEL), only)
        else:
            print("e2e: no CNN part: this build has no libtorch (LOUPE_E2E_CNN=0)")
        print("e2e: ok; screenshots in %s: %s" % (shots, json.dumps(sorted(os.listdir(shots)))))
    finally:
        shutil.rmtree(os.path.join(tmp, "models"), ignore_errors=True)
        shutil.rmtree(os.path.join(tmp, "cnn-models"), ignore_errors=True)
        if not os.environ.get("LOUPE_SCREENSHOTS"):
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
