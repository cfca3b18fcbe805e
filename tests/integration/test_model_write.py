"""Model folders are written whole or not at all, by every writer (docs/model-folder.md, "Writing a folder").

Kill: `loupe train-mlp` replacing a served folder is killed (SIGKILL, delivered by strace's fault
injection) at every call of every file-system syscall it makes while it writes the folder, and
at a few moments of its run; after each kill the folder is the old one or the new one, whole,
and the daemon's reload loads it and nothing else.
FullDisk: train-mlp and training/export_vgg.py writing onto a small tmpfs fail with an error that
names the folder and says "No space left on device"; an old folder stays as it was, no temporary
folder is left; export_vgg.py re-exporting in place keeps the folder's checkpoint.pt.
Edges: an --out that is a file (an error), a link to a folder (the folder is replaced, the link
stays), checkpoints/ carried into the new folder.
Needs root (mount) and strace.

    LOUPE_BIN=build/cli/loupe /usr/bin/python3 test_model_write.py Kill Edges FullDisk
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loupe_fixture as fx  # noqa: E402

LOUPE = os.environ.get("LOUPE_BIN", "build/cli/loupe")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAINING = os.path.join(ROOT, "training")
FILES = ["history.json", "metrics.json", "model.json", "weights.safetensors"]
# Small and quick: about half a second a run.
TRAIN = ("train-mlp", "--epochs", "1", "--train-limit", "500", "--quiet", "--threads", "1")
# Every syscall train-mlp's folder writer changes the file system with (training/model_dir.c).
SYSCALLS = ("mkdir", "rename", "renameat2", "fsync", "unlink", "rmdir")


# LeakSanitizer cannot run under ptrace (the ASan build): off for the runs under strace.
TRACED_ENV = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0")


def train(out, seed, hidden="8", strace=None):
    """train-mlp into out; strace=(syscall, k): SIGKILLed at the k-th call of syscall."""
    cmd = [LOUPE, *TRAIN, "--hidden", hidden, "--seed", str(seed), "--out", out]
    if strace:
        cmd = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=" + strace[0],
               "-e", "inject=%s:signal=KILL:when=%d" % strace] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=TRACED_ENV if strace else None)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def snapshot(folder):
    """{file: bytes} of a folder's files."""
    return {f: read(os.path.join(folder, f)) for f in sorted(os.listdir(folder))}


class Kill(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="loupe-kill-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.store = os.path.join(self.tmp, "store")
        self.out = os.path.join(self.store, "alpha")
        # The old version (seed 1) and what the new one (seed 2) writes, as whole folders.
        self.old = os.path.join(self.tmp, "old", "alpha")
        self.new = os.path.join(self.tmp, "new", "alpha")
        for folder, seed in ((self.old, 1), (self.new, 2)):
            p = train(folder, seed)
            self.assertEqual(p.returncode, 0, p.stderr)
        self.weights = {read(os.path.join(self.old, "weights.safetensors")): 1,
                        read(os.path.join(self.new, "weights.safetensors")): 2}
        self.assertEqual(len(self.weights), 2)

    def reset(self):
        shutil.rmtree(self.store, ignore_errors=True)
        os.makedirs(self.store)
        shutil.copytree(self.old, self.out)

    def version(self, why):
        """1 or 2: which whole folder is in the store; fails on anything else."""
        extra = [n for n in os.listdir(self.store) if n != "alpha"]
        self.assertTrue(all(n.startswith(".") for n in extra), (why, extra))
        self.assertTrue(os.path.isdir(self.out), (why, "no folder"))
        self.assertEqual(sorted(os.listdir(self.out)), FILES, why)
        files = snapshot(self.out)
        seed = self.weights.get(files["weights.safetensors"])
        self.assertIsNotNone(seed, (why, "weights of neither version"))
        man = json.loads(files["model.json"])
        self.assertEqual((man["name"], man["training"]["seed"]), ("alpha", seed), why)
        self.assertEqual(json.loads(files["history.json"])["kept_epoch"], 1, why)
        self.assertIn("confusion", json.loads(files["metrics.json"]), why)
        return seed

    def test_a_kill_at_any_syscall_leaves_the_old_or_the_new_folder(self):
        self.reset()
        d = fx.Daemon(LOUPE, self.store, "--drain-grace", "0", env={"LOUPE_ADMIN_TOKEN": "t"})
        try:
            img = fx.png_gray(fx.test_set()[0][5])
            probs = {}

            def check(why):
                seed = self.version(why)
                st, _, b = d.json("POST", "/v1/admin/reload", headers={"Authorization": "Bearer t"})
                self.assertEqual(st, 200, b)
                self.assertEqual((b["models"], b["skipped"]), (["alpha"], []), (why, b))
                st, _, p = d.json("POST", "/v1/models/alpha/predict", img, {"Content-Type": "image/png"})
                self.assertEqual(st, 200, p)
                if seed in probs:
                    np.testing.assert_allclose(p["probabilities"], probs[seed], rtol=0, atol=1e-6, err_msg=why)
                probs[seed] = p["probabilities"]
                return seed

            check("before")
            # How many calls of each the run makes (it makes them all in the writer but the
            # first mkdir's, which the writer skips when the parent exists).
            self.reset()
            log = os.path.join(self.tmp, "strace.log")
            p = subprocess.run(["strace", "-f", "-qq", "-o", log, "-e", "trace=" + ",".join(SYSCALLS),
                                LOUPE, *TRAIN, "--hidden", "8", "--seed", "2", "--out", self.out],
                               capture_output=True, text=True, timeout=120, env=TRACED_ENV)
            self.assertEqual(p.returncode, 0, p.stderr)
            with open(log) as f:
                calls = [re.match(r"\d+\s+(\w+)\(", ln) for ln in f]
            counts = {sc: sum(1 for m in calls if m and m.group(1) == sc) for sc in SYSCALLS}
            self.assertTrue(all(counts.values()), counts)
            outcomes = set()
            for sc in SYSCALLS:
                for k in range(1, counts[sc] + 1):
                    self.reset()
                    p = train(self.out, 2, strace=(sc, k))
                    why = "SIGKILL at %s call %d of %d" % (sc, k, counts[sc])
                    self.assertEqual(p.returncode, -signal.SIGKILL, (why, p.stderr))
                    outcomes.add(check(why))
            # Kills before the swap left the old folder, kills after it the new one.
            self.assertEqual(outcomes, {1, 2})

            # And a plain kill -9 at moments of the run (training, evaluating, writing).
            t0 = time.monotonic()
            self.assertEqual(train(self.out, 2).returncode, 0)
            run_s = time.monotonic() - t0
            for frac in (0.3, 0.7, 0.9, 0.97):
                self.reset()
                proc = subprocess.Popen([LOUPE, *TRAIN, "--hidden", "8", "--seed", "2", "--out", self.out],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(run_s * frac)
                proc.kill()
                proc.wait()
                check("kill -9 after %.0f%% of a run" % (100 * frac))
        finally:
            self.assertEqual(d.stop(), 0)
        self.assertNotIn("skipped", d.read_log())


class Edges(unittest.TestCase):
    """What the writers do with an --out that is not a plain folder, and what they carry over."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="loupe-edges-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_a_file_in_the_way_is_an_error(self):
        out = os.path.join(self.tmp, "alpha")
        with open(out, "w") as f:
            f.write("mine")
        p = train(out, 1)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("%s exists and is not a folder" % out, p.stderr)
        self.assertEqual(read(out), b"mine")
        self.assertEqual(os.listdir(self.tmp), ["alpha"])

    def test_a_link_to_a_folder_stays_a_link(self):
        real, link = os.path.join(self.tmp, "real", "alpha"), os.path.join(self.tmp, "store", "alpha")
        self.assertEqual(train(real, 1).returncode, 0)
        os.makedirs(os.path.dirname(link))
        os.symlink(real, link)
        p = train(link, 2)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(os.path.islink(link))
        with open(os.path.join(real, "model.json")) as f:
            self.assertEqual(json.load(f)["training"]["seed"], 2)
        self.assertEqual(os.listdir(os.path.dirname(link)), ["alpha"])
        self.assertEqual(os.listdir(os.path.dirname(real)), ["alpha"])

    def test_checkpoints_are_carried_into_the_new_folder(self):
        out = os.path.join(self.tmp, "alpha")
        p = subprocess.run([LOUPE, *TRAIN, "--hidden", "8", "--checkpoint-at", "1", "--out", out],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(sorted(os.listdir(out)), ["checkpoints"] + FILES)
        self.assertEqual(sorted(os.listdir(os.path.join(out, "checkpoints", "epoch-1"))), FILES)
        # A later run without checkpoints replaces the model and keeps them.
        self.assertEqual(train(out, 2).returncode, 0)
        self.assertEqual(sorted(os.listdir(out)), ["checkpoints"] + FILES)
        self.assertEqual(sorted(os.listdir(os.path.join(out, "checkpoints", "epoch-1"))), FILES)
        self.assertEqual(os.listdir(self.tmp), ["alpha"])


class FullDisk(unittest.TestCase):
    """A tmpfs of a few hundred KB (mounted here: needs root)."""

    def mount(self, size):
        d = tempfile.mkdtemp(prefix="loupe-full-")
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", d],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, "cannot mount a tmpfs (this test needs root): " + p.stderr)
        self.addCleanup(os.rmdir, d)
        self.addCleanup(subprocess.run, ["umount", d], check=True)
        return d

    def fill(self, d, leave):
        """Fill d up to `leave` bytes free (whole pages)."""
        st = os.statvfs(d)
        free = st.f_bavail * st.f_frsize
        self.assertGreater(free, leave)
        with open(os.path.join(d, "filler"), "wb") as f:
            f.write(b"\0" * (free - leave))
        st = os.statvfs(d)
        self.assertEqual(st.f_bavail * st.f_frsize, leave)

    def assert_full_disk_error(self, p, folder):
        self.assertNotEqual(p.returncode, 0, p.stderr)
        self.assertIn("writing the model folder %s" % folder, p.stderr)
        self.assertIn("no space left on device", p.stderr.lower())
        self.assertNotIn("Sanitizer", p.stderr)  # the error path frees what it took

    def test_train_mlp_new_folder(self):
        d = self.mount("200k")
        out = os.path.join(d, "beta")
        p = train(out, 1, hidden="128")  # 400 KB of weights
        self.assert_full_disk_error(p, out)
        self.assertIn("weights.safetensors", p.stderr)
        self.assertEqual(os.listdir(d), [])

    def test_train_mlp_keeps_the_old_folder(self):
        d = self.mount("400k")
        out = os.path.join(d, "alpha")
        self.assertEqual(train(out, 1).returncode, 0)
        old = snapshot(out)
        # Room for the new weights (hidden 32: 101,800 bytes, 25 pages) and one page more: the
        # weights and model.json fit, a later JSON file does not.
        self.fill(d, 26 * 4096)
        p = train(out, 2, hidden="32")
        self.assert_full_disk_error(p, out)
        self.assertIn(".json.tmp", p.stderr)
        self.assertEqual(sorted(os.listdir(d)), ["alpha", "filler"])
        self.assertEqual(snapshot(out), old)

    def test_export_vgg_keeps_the_old_folder(self):
        d = self.mount("1m")
        ck = tempfile.mkdtemp(prefix="loupe-ck-")
        self.addCleanup(shutil.rmtree, ck, True)
        code = ("import sys, torch; sys.path.insert(0, %r)\n"
                "import export_vgg, fashion_mnist\n"
                "from vgg import VGG\n"
                "torch.manual_seed(0)\n"
                "cfg = {'depth': 11, 'width': 0.125, 'batch_norm': True, 'in_channels': 1, 'num_classes': 10,"
                " 'head': 'compact', 'dropout': 0.0}\n"
                "man = {'name': 'tiny', 'kind': 'torchscript', 'classes': fashion_mnist.CLASSES,"
                " 'input': {'channels': 1, 'height': 32, 'width': 32, 'mean': [0.3], 'std': [0.35],"
                " 'resize': 'pad'}, 'training': {}}\n"
                "torch.save(export_vgg.make_checkpoint(VGG(cfg), cfg, man), sys.argv[1])\n" % TRAINING)
        subprocess.run([sys.executable, "-c", code, os.path.join(ck, "checkpoint.pt")], check=True, timeout=300)
        export = [sys.executable, os.path.join(TRAINING, "export_vgg.py"), os.path.join(ck, "checkpoint.pt")]
        out = os.path.join(d, "vgg")
        p = subprocess.run(export + [out], capture_output=True, text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr)
        old = snapshot(out)
        self.assertEqual(sorted(old), ["model.json", "model.ts"])
        # Re-exported in place, the folder keeps the files the export does not write.
        p = subprocess.run(export + [ck], capture_output=True, text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(sorted(os.listdir(ck)), ["checkpoint.pt", "model.json", "model.ts"])
        with open(os.path.join(ck, "model.json")) as f:
            self.assertEqual(json.load(f)["kind"], "torchscript")
        # A second export does not fit beside the first (model.ts is about 630 KB).
        p = subprocess.run(export + [out], capture_output=True, text=True, timeout=300)
        self.assert_full_disk_error(p, out)
        self.assertEqual(os.listdir(d), ["vgg"])
        self.assertEqual(snapshot(out), old)


if __name__ == "__main__":
    unittest.main(verbosity=2)
