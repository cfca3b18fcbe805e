"""End-to-end test of the browser page: a tiny trained MLP and a hand-made report behind the real
daemon, driven by headless Chromium (page.test.cjs, playwright-core).

    LOUPE_BIN=build/cli/loupe NODE_PATH=<folder with node_modules/playwright-core> \\
        /usr/bin/python3 tests/e2e/run_e2e.py

CTest runs it after `npm ci` of tests/e2e/package-lock.json in the build folder (tests/e2e/CMakeLists.txt).
LOUPE_SCREENSHOTS (default: a temporary folder) receives explore.png, training.png and reports.png.
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


def main():
    for what, path in (("loupe", LOUPE), ("chromium (Debian package chromium)", CHROMIUM)):
        if not os.access(path, os.X_OK):
            sys.exit("e2e: %s not found at %s" % (what, path))
    node = shutil.which("node")
    if not node:
        sys.exit("e2e: node not found (Debian package nodejs)")
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
        d = fx.Daemon(LOUPE, models, "--reports", reports, "--static", os.path.join(ROOT, "static"),
                      "--drain-grace", "0")
        try:
            with open(upload, "rb") as f:
                st, _, want = d.json("POST", "/v1/models/%s/predict" % MODEL, f.read(), {"Content-Type": "image/png"})
            fx.require(st == 200, want)
            env = dict(os.environ, LOUPE_URL="http://127.0.0.1:%d/" % d.port, LOUPE_UPLOAD=upload,
                       LOUPE_MODEL=MODEL, LOUPE_EXPECT_CLASS=want["class"], LOUPE_SCREENSHOTS=shots,
                       LOUPE_CHROMIUM=CHROMIUM)
            rc = subprocess.run([node, os.path.join(HERE, "page.test.cjs")], env=env, timeout=300).returncode
        finally:
            drc = d.stop()
        if drc != 0:
            print(d.read_log(), file=sys.stderr)
            sys.exit("e2e: loupe serve exited %d" % drc)
        if rc != 0:
            print(d.read_log()[-4000:], file=sys.stderr)
            sys.exit("e2e: the page test failed (exit %d)" % rc)
        # The page with --api-token: it asks for the token, then works.
        d = fx.Daemon(LOUPE, models, "--static", os.path.join(ROOT, "static"), "--drain-grace", "0",
                      env={"LOUPE_API_TOKEN": "e2e-token"})
        try:
            env = dict(os.environ, LOUPE_URL="http://127.0.0.1:%d/" % d.port, LOUPE_MODEL=MODEL,
                       LOUPE_TOKEN="e2e-token", LOUPE_CHROMIUM=CHROMIUM)
            rc = subprocess.run([node, os.path.join(HERE, "token.test.cjs")], env=env, timeout=120).returncode
        finally:
            drc = d.stop()
        if rc != 0 or drc != 0:
            print(d.read_log()[-4000:], file=sys.stderr)
            sys.exit("e2e: the API-token page test failed (exit %d, daemon %d)" % (rc, drc))
        print("e2e: ok; screenshots in %s: %s" % (shots, json.dumps(sorted(os.listdir(shots)))))
    finally:
        shutil.rmtree(os.path.join(tmp, "models"), ignore_errors=True)
        if not os.environ.get("LOUPE_SCREENSHOTS"):
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
