"""Helpers for the daemon's integration tests: a model store, a live `loupe serve`, images, HTTP.

Standard library plus numpy and Pillow (Debian python3-numpy, python3-pil); run with /usr/bin/python3.
"""
import gzip
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest
import zlib

import numpy as np

import openapi_check

DATA = os.environ.get("LOUPE_DATA", "/usr/share/datasets/fashion-mnist")


def require(cond, msg=""):
    """An assert that `python3 -O` keeps: raises AssertionError(msg) when cond is false.
    For class set-up and tear-down, helper threads and scripts, where self.assert* is not at hand."""
    if not cond:
        raise AssertionError(msg)


# ==== Fashion-MNIST ====

def load_idx(name):
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        raw = f.read()
    magic, = struct.unpack(">I", raw[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def test_set():
    """(images [10000,28,28] uint8, labels [10000])."""
    return load_idx("t10k-images-idx3-ubyte.gz"), load_idx("t10k-labels-idx1-ubyte.gz")


# ==== Images ====

def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_gray(img, width=None, height=None, idat=None):
    """An 8-bit grayscale PNG of a [h,w] uint8 array, written by hand (no encoder involved).
    width/height override the header (zero sizes, bombs); idat overrides the compressed data."""
    h, w = img.shape
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", width if width is not None else w, height if height is not None else h,
                       8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) +
            _chunk(b"IDAT", idat if idat is not None else zlib.compress(raw, 6)) + _chunk(b"IEND", b""))


def png_bomb(width, height):
    """A PNG whose header promises width*height gray pixels of zeros, compressed to a few hundred KB."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())
    return png_gray(np.zeros((1, 1), np.uint8), width=width, height=height, idat=b"".join(parts))


def pil_encode(img, fmt, mode="L", **kw):
    from PIL import Image
    im = Image.fromarray(img).convert(mode) if mode != "L" else Image.fromarray(img)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def multipart(field, data, filename="x.png", ctype="image/png", extra=None):
    boundary = "loupe-test-boundary-7d1c"
    parts = []
    for k, v in (extra or {}).items():
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode())
    parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
                 f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


# ==== Model store ====

def write_safetensors(path, tensors, activation="relu"):
    """tensors: list of (name, float32 array). Written by hand, as the format says."""
    header, blobs, off = {"__metadata__": {"format": "pt", "activation": activation}}, [], 0
    for name, arr in tensors:
        b = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def write_zero_model(folder):
    """A one-layer MLP with all-zero weights: its input gradient is exactly zero."""
    os.makedirs(folder, exist_ok=True)
    write_safetensors(os.path.join(folder, "weights.safetensors"),
                      [("layers.0.weight", np.zeros((10, 784), np.float32)),
                       ("layers.0.bias", np.zeros(10, np.float32))])
    manifest = {"name": os.path.basename(folder), "kind": "mlp", "classes": CLASSES,
                "input": {"channels": 1, "height": 28, "width": 28, "mean": [0.0], "std": [1.0],
                          "resize": "area", "invert": "auto"},
                "mlp": {"activation": "relu", "sizes": [784, 10]}, "layers": [], "training": {}}
    with open(os.path.join(folder, "model.json"), "w") as f:
        json.dump(manifest, f)


def make_store(loupe, root):
    """Train two small models with the real trainer, add a zero model and a broken folder."""
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    # alpha has a hidden layer wider than 64 after the first: batch-1 GEMMs of every shape.
    for name, hidden, seed in (("alpha", "128,96", 1), ("beta", "32", 2)):
        out = os.path.join(root, name)
        subprocess.run([loupe, "train-mlp", "--epochs", "1", "--hidden", hidden, "--seed", str(seed),
                        "--out", out], check=True, stdout=subprocess.DEVNULL)
    write_zero_model(os.path.join(root, "zero"))
    broken = os.path.join(root, "broken")
    os.makedirs(broken, exist_ok=True)
    with open(os.path.join(broken, "model.json"), "w") as f:
        f.write("{ this is not json")


# ==== The daemon ====

class Daemon:
    """`loupe serve` on a free port; stderr goes to a file the tests can read."""

    def __init__(self, loupe, models, *args, env=None):
        self.log_path = tempfile.mktemp(prefix="loupe-serve-", suffix=".log")
        self.log = open(self.log_path, "wb")
        e = dict(os.environ)
        e.update(env or {})
        self.proc = subprocess.Popen([loupe, "serve", "--models", models, "--port", "0", "--host", "127.0.0.1",
                                      *args], stdout=self.log, stderr=self.log, env=e)
        self.port = None
        # Loading libtorch and warming CNNs under a sanitizer, on a loaded machine, takes a while.
        deadline = time.time() + 180
        while time.time() < deadline:
            text = self.read_log()
            m = re.search(r"listening on (https?)://\S+:(\d+) ", text)
            if m:
                self.scheme, self.port = m.group(1), int(m.group(2))
                break
            if self.proc.poll() is not None:
                raise RuntimeError("loupe serve exited %d:\n%s" % (self.proc.returncode, text))
            time.sleep(0.02)
        if self.port is None:
            self.stop()
            raise RuntimeError("loupe serve did not start:\n" + self.read_log())

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=60):
        """SIGTERM and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        return rc

    def conn(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, conn=None):
        """(status, headers dict lower-cased, body bytes); reuses conn when given (keep-alive)."""
        c = conn or self.conn()
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            # Every answer must be one docs/openapi.json describes (route, status, content type, schema).
            openapi_check.check(method, path, r.status, hdrs, data)
            return r.status, hdrs, data
        finally:
            if conn is None:
                c.close()

    def json(self, method, path, body=None, headers=None, conn=None):
        st, h, data = self.request(method, path, body, headers, conn)
        return st, h, json.loads(data) if data else None

    def raw(self, data, read_timeout=10):
        """Send raw bytes on a fresh socket and return everything read until close or timeout."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=read_timeout)
        try:
            s.sendall(data)
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except (socket.timeout, ConnectionResetError):
                    break
                if not chunk:
                    break
                out += chunk
                if b"\r\n\r\n" in out:
                    head, rest = out.split(b"\r\n\r\n", 1)
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:") and len(rest) >= int(line.split(b":")[1]):
                            return out
            return out
        finally:
            s.close()


# ==== Reports ====

def make_report(folder, quick=True):
    """A hand-made reproduction report as training/reproduce.py lays it out: report.json, report.md
    (with non-ASCII text) and one small PNG figure. report.json also names a figure that is missing."""
    figs = os.path.join(folder, "figures")
    os.makedirs(figs, exist_ok=True)
    name = os.path.basename(os.path.normpath(folder))
    ramp = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    with open(os.path.join(figs, "mlp_loss_relu.png"), "wb") as f:
        f.write(png_gray(ramp))
    rep = {"name": name, "quick": quick, "commit": "abc1234", "machine": {"cpu": "test", "cores": 2},
           "date": "2026-01-02T03:04:05+00:00", "checkpoints": [2, 3],
           "figures": ["mlp_loss_relu.png", "missing.png"], "runs": [{"run": "mlp-relu", "seconds": 1.5}],
           "tables": {"mlp": {"relu": {"mine_2": 0.71, "mine_3": 0.74}}},
           "best": {"model": "Loupe's MLP", "activation": "relu", "column": "mine_3", "test_accuracy": 0.74},
           "findings": {"linear_divergence_epoch": None}}
    with open(os.path.join(folder, "report.json"), "w") as f:
        json.dump(rep, f, indent=1)
    with open(os.path.join(folder, "report.md"), "w", encoding="utf-8") as f:
        f.write("# Reproduction of the seed report (quick)\n\nCE(y, p) = H(y) + KL(y ‖ p) → minimised.\n\n"
                "![mlp_loss_relu.png](figures/mlp_loss_relu.png)\n")
    return rep


def random_start(inp, seed):
    """The seeded start image of GET .../filters and .../classes/{c}/visualize (pixels uniform in
    [150,180]/255 from splitmix64, the generator that names a seed's image in the shim and in core),
    normalised by the manifest's input (mean, std per channel), as float32 [1,C,H,W]."""
    m64 = (1 << 64) - 1
    c, h, w = inp["channels"], inp["height"], inp["width"]
    out = np.empty((c, h * w), np.float32)
    state = seed
    for k in range(c):
        mean = float(np.float32(inp["mean"][k if len(inp["mean"]) > 1 else 0]))
        std = float(np.float32(inp["std"][k if len(inp["std"]) > 1 else 0]))
        for i in range(h * w):
            state = (state + 0x9E3779B97F4A7C15) & m64
            z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & m64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m64
            u = ((z ^ (z >> 31)) >> 11) * (1.0 / 9007199254740992.0)
            out[k, i] = ((150.0 + 30.0 * u) / 255.0 - mean) / std
    return out.reshape(1, c, h, w)


class CliAgainstDaemon(unittest.TestCase):
    """An offline command against the daemon's answer: a daemon on the class's STORE (set `loupe`
    and `store`) and the first test image as shoe.png in a temporary folder (`img`); cli() runs
    `loupe ARGS`, api() asks the daemon (both assert success)."""
    loupe = None
    store = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="loupe-%s-" % cls.__name__.lower())
        cls.img = os.path.join(cls.tmp, "shoe.png")
        with open(cls.img, "wb") as f:
            f.write(png_gray(test_set()[0][0]))
        cls.d = Daemon(cls.loupe, cls.store, "--drain-grace", "0")

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        require(rc == 0, "loupe serve exited %d\n%s" % (rc, cls.d.read_log()))

    def cli(self, *args, ok=True):
        r = subprocess.run([self.loupe, *args], capture_output=True)
        if ok:
            self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def api(self, method, path, body=None):
        st, _, data = self.d.request(method, path, body, {"Content-Type": "image/png"} if body else {})
        self.assertEqual(st, 200, data[:300])
        return data
