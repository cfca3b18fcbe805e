"""Integration tests of `loupe serve --watch` and GET /v1/training: the real daemon, hand-made folders.

    LOUPE_BIN=build/cli/loupe /usr/bin/python3 tests/integration/test_watch.py [Watch Training]

No model store needed. Watch: MLP folders written as the trainers write them (training/model_folder.py:
a hidden .NAME.tmp-PID folder, then one rename) are added, changed and removed while the daemon polls
every second; each shows within a few seconds, without a signal; nothing reloads while nothing changes
(loupe_reloads_total), and a half-written hidden folder or a trainer's status file changes nothing.
Training: status files as training/train_status.py writes them, listed at GET /v1/training; stale,
malformed and hidden ones left out.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "training"))
import loupe_fixture as fx  # noqa: E402
import model_folder  # noqa: E402
import train_status  # noqa: E402

LOUPE = os.environ.get("LOUPE_BIN", "build/cli/loupe")
WAIT = 20.0  # seconds a change may take to show: a 1 s poll, a reload, a loaded machine


def write_mlp(store, name, cls):
    """A one-layer MLP that answers class `cls` for every image, written whole or not at all."""
    w = np.zeros((10, 784), np.float32)
    b = np.zeros(10, np.float32)
    b[cls] = 5.0
    manifest = {"name": name, "kind": "mlp", "classes": fx.CLASSES,
                "input": {"channels": 1, "height": 28, "width": 28, "mean": [0.0], "std": [1.0],
                          "resize": "area", "invert": "auto"},
                "mlp": {"activation": "relu", "sizes": [784, 10]}, "layers": [], "training": {}}
    with model_folder.staged(os.path.join(store, name)) as tmp:
        fx.write_safetensors(os.path.join(tmp, "weights.safetensors"),
                             [("layers.0.weight", w), ("layers.0.bias", b)])
        model_folder.write_json(os.path.join(tmp, "model.json"), manifest)


def until(cond, timeout=WAIT):
    """Poll cond() until it is true; returns the seconds it took, or fails."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return time.time() - t0
        time.sleep(0.1)
    raise AssertionError("not within %.0f s" % timeout)


class StoreDaemon(unittest.TestCase):
    """A daemon (with args) on a temporary store that holds one MLP, "base"."""
    args = ()

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="loupe-%s-" % cls.__name__.lower())
        cls.store = os.path.join(cls.tmp, "models")
        os.makedirs(cls.store)
        write_mlp(cls.store, "base", 1)
        cls.d = fx.Daemon(LOUPE, cls.store, *cls.args, "--drain-grace", "0")

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        fx.require(rc == 0, "loupe serve exited %d" % rc)


class Watch(StoreDaemon):
    args = ("--watch", "1")

    def models(self):
        st, _, b = self.d.json("GET", "/v1/models")
        self.assertEqual(st, 200, b)
        return sorted(m["name"] for m in b["models"])

    def predicted(self, name):
        st, _, b = self.d.json("POST", "/v1/models/%s/predict" % name, fx.png_gray(np.zeros((28, 28), np.uint8)),
                               {"Content-Type": "image/png"})
        return int(np.argmax(b["probabilities"])) if st == 200 else None

    def reloads(self):
        st, _, body = self.d.request("GET", "/metrics")
        self.assertEqual(st, 200)
        return int(re.search(rb'loupe_reloads_total\{result="ok"\} (\d+)', body).group(1))

    def test_added_changed_removed(self):
        self.assertEqual(self.models(), ["base"])
        write_mlp(self.store, "late", 3)
        s = until(lambda: "late" in self.models())
        self.assertEqual(self.predicted("late"), 3)
        write_mlp(self.store, "late", 7)  # replaced by renameat2(RENAME_EXCHANGE)
        s += until(lambda: self.predicted("late") == 7)
        shutil.rmtree(os.path.join(self.store, "late"))
        s += until(lambda: self.models() == ["base"])
        self.assertLess(s, 3 * WAIT)
        self.assertIn("reloading the model store (--watch: the store changed)", self.d.read_log())

    def test_quiet_when_nothing_changes(self):
        before = self.reloads()
        time.sleep(3.5)
        self.assertEqual(self.reloads(), before)
        # A writer's half-written folder and a trainer's status file: hidden, so nothing reloads.
        half = os.path.join(self.store, ".half.tmp-%d" % os.getpid())
        os.makedirs(half)
        with open(os.path.join(half, "model.json"), "w") as f:
            f.write('{"name": "half", "kind": "ml')
        status = train_status.Status(os.path.join(self.store, ".training", "vgg.json"), "vgg", 4)
        for epoch in range(3):
            status.update(epoch + 1, 0.2 * epoch, force=True)
            time.sleep(1.2)
        self.assertEqual(self.reloads(), before)
        self.assertEqual(self.models(), ["base"])
        status.close()
        shutil.rmtree(half)
        # The same content again under a new inode is a change (a folder replaced whole).
        write_mlp(self.store, "base", 1)
        until(lambda: self.reloads() > before)
        self.assertEqual(self.models(), ["base"])

    def test_flag(self):
        out = subprocess.run([LOUPE, "serve", "--help"], capture_output=True, text=True).stdout
        self.assertRegex(out, r"--watch SECONDS +LOUPE_WATCH")
        for bad in ("0.01", "-1", "soon"):
            r = subprocess.run([LOUPE, "serve", "--watch", bad, "--models", self.store], capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("--watch", r.stderr)

    def test_watch_off_by_default(self):
        d = fx.Daemon(LOUPE, self.store, "--drain-grace", "0", env={"LOUPE_WATCH": "0"})
        try:
            write_mlp(self.store, "unseen", 2)
            time.sleep(2.5)
            st, _, b = d.json("GET", "/v1/models")
            self.assertNotIn("unseen", [m["name"] for m in b["models"]])
            self.assertNotIn("--watch", d.read_log())
        finally:
            self.assertEqual(d.stop(), 0)
            shutil.rmtree(os.path.join(self.store, "unseen"))
        until(lambda: self.models() == ["base"])


class Training(StoreDaemon):
    def trainings(self):
        st, _, b = self.d.json("GET", "/v1/training")
        self.assertEqual(st, 200, b)
        return b["trainings"]

    def write(self, name, doc):
        os.makedirs(os.path.join(self.store, ".training"), exist_ok=True)
        with open(os.path.join(self.store, ".training", name), "w") as f:
            f.write(doc if isinstance(doc, str) else json.dumps(doc))

    def test_listing(self):
        self.assertEqual(self.trainings(), [])  # no .training folder at all
        s = train_status.Status(os.path.join(self.store, ".training", "vgg11-w25.json"), "vgg11-w25", 6)
        s.started -= 100  # as if 100 s in, a quarter done: about 300 s to go
        s.update(2, 0.25, force=True)
        now = time.time()
        good = {"name": "a-first", "phase": "exporting", "epoch": 4, "epochs": None, "progress": 1,
                "eta_seconds": None, "started": now - 50, "updated": now}
        self.write("a-first.json", good)
        # Left out: stale (a dead trainer's), malformed, wrong types, hidden temp file, not .json.
        self.write("stale.json", dict(good, name="stale", updated=now - 700))
        self.write("bad.json", "{ not json")
        self.write("types.json", dict(good, name="types", epoch="three"))
        self.write("range.json", dict(good, name="range", progress=1.5))
        self.write("phase.json", dict(good, name="phase", phase="sleeping"))
        self.write(".a-first.json.tmp-1", dict(good, name="hidden"))
        self.write("notes.txt", dict(good, name="txt"))
        t = self.trainings()
        self.assertEqual([e["name"] for e in t], ["a-first", "vgg11-w25"])
        self.assertEqual(t[0], {"name": "a-first", "phase": "exporting", "epoch": 4, "epochs": None,
                                "progress": 1.0, "eta_seconds": None, "elapsed_seconds": 50,
                                "updated_seconds_ago": 0})
        v = t[1]
        self.assertEqual((v["phase"], v["epoch"], v["epochs"], v["progress"]), ("training", 2, 6, 0.25))
        self.assertTrue(290 <= v["eta_seconds"] <= 310, v)
        self.assertTrue(99 <= v["elapsed_seconds"] <= 105, v)
        # The status file is gone when the training ends; so is the entry.
        s.close()
        self.assertEqual([e["name"] for e in self.trainings()], ["a-first"])
        # The registry never sees the hidden folder.
        st, _, b = self.d.json("GET", "/v1/models")
        self.assertEqual([m["name"] for m in b["models"]], ["base"])

    def test_needs_the_api_token(self):
        d = fx.Daemon(LOUPE, self.store, "--drain-grace", "0", env={"LOUPE_API_TOKEN": "t0ken"})
        try:
            st, _, _ = d.json("GET", "/v1/training")
            self.assertEqual(st, 401)
            st, _, b = d.json("GET", "/v1/training", headers={"Authorization": "Bearer t0ken"})
            self.assertEqual(st, 200, b)
        finally:
            self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1] + sys.argv[1:], verbosity=2)
