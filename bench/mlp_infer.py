#!/usr/bin/python3
"""Time in an MLP's forward pass for one 28x28 predict, per kernel path, from `loupe serve`'s own timing.

For each kernel path this CPU runs (LOUPE_MLP_KERNELS: avx512, avx2, portable,
dense), starts `loupe serve` on a model folder, sends --requests single
predicts of the first Fashion-MNIST test image (a PNG) one after another, and
prints the median, p90 and minimum of the answers' timing_ms.inference (the
forward pass alone, no decoding or HTTP), after --warmup requests. dense runs
OpenBLAS under the OPENBLAS_CORETYPE of the environment (Haswell at the AVX2
level: `OPENBLAS_CORETYPE=Haswell bench/mlp_infer.py`).

usage: bench/mlp_infer.py [--loupe build/cli/loupe] [--model DIR] [--requests 2000] [--warmup 200]
  --model DIR   an MLP model folder (default: `loupe train-mlp --epochs 1` into a temp dir)
"""
import argparse
import gzip
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from exec_inputs import TEST_IMAGES, png_rows
from mlp_train import cpu_levels, cpu_model


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(loupe, store, kernels, png, n, warmup):
    port = free_port()
    env = dict(os.environ, LOUPE_MLP_KERNELS=kernels)
    p = subprocess.Popen([loupe, "serve", "--models", store, "--port", str(port), "--host", "127.0.0.1",
                          "--access-log", "off"], env=env, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/v1/models/m/predict"
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        times = []
        for i in range(warmup + n):
            req = urllib.request.Request(url, data=png, headers={"Content-Type": "image/png"})
            with urllib.request.urlopen(req, timeout=5) as r:
                t = json.load(r)["timing_ms"]["inference"]
            if i >= warmup:
                times.append(t)
        return times
    finally:
        p.terminate()
        p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loupe", default="build/cli/loupe")
    ap.add_argument("--model")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    a = ap.parse_args()
    with gzip.open(TEST_IMAGES) as f:
        px = f.read()[16:16 + 784]
    png = png_rows([px[28 * y:28 * y + 28] for y in range(28)])
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "models")
        os.makedirs(store)
        if a.model:
            os.symlink(os.path.abspath(a.model), os.path.join(store, "m"))
        else:
            subprocess.run([a.loupe, "train-mlp", "--epochs", "1", "--quiet", "--out", os.path.join(store, "m")],
                           check=True, stderr=subprocess.DEVNULL)
        with open(os.path.join(store, "m", "model.json")) as f:
            hidden = json.load(f)["training"]["hidden"]
        print(f"machine: {cpu_model()}, {os.cpu_count()} cores; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(own choice)')}; "
              f"model 784-{'-'.join(map(str, hidden))}-10; {a.requests} single predicts a path after {a.warmup}")
        print(f"{'kernels':<10} {'median ms':>10} {'p90 ms':>8} {'min ms':>8}")
        for k in cpu_levels() + ["dense"]:
            t = sorted(measure(a.loupe, store, k, png, a.requests, a.warmup))
            print(f"{k:<10} {statistics.median(t):10.4f} {t[int(0.9 * len(t))]:8.4f} {t[0]:8.4f}")


if __name__ == "__main__":
    sys.exit(main())
