"""The `loupe` command line around the daemon: the Python trainers' subcommands and bash completion.

    LOUPE_BIN=build/cli/loupe /usr/bin/python3 tests/integration/test_cli.py [Python Completion]
"""
import os
import subprocess
import sys
import tempfile
import unittest

LOUPE = os.path.abspath(os.environ.get("LOUPE_BIN", "build/cli/loupe"))
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
COMPLETION = os.path.join(ROOT, "scripts", "loupe-completion.bash")


class Python(unittest.TestCase):
    """`loupe train-vgg` and `loupe reproduce` find a Python that imports torch, whatever python3 is first on PATH."""

    def run_loupe(self, *args, env=None):
        e = dict(os.environ)
        e.pop("LOUPE_PYTHON", None)
        e.update(env or {})
        return subprocess.run([LOUPE, *args], capture_output=True, text=True, env=e, timeout=300)

    def test_a_python3_without_torch_first_on_path(self):
        """The python3 first on PATH lacks torch (as on this project's machines): Debian's is used."""
        fake = tempfile.mkdtemp(prefix="loupe-fakepy-")
        py = os.path.join(fake, "python3")
        with open(py, "w") as f:
            f.write("#!/bin/sh\necho 'ModuleNotFoundError: No module named torch' >&2\nexit 1\n")
        os.chmod(py, 0o755)
        p = self.run_loupe("train-vgg", "--help", env={"PATH": fake + ":/usr/bin:/bin"})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("usage: train_vgg.py", p.stdout)
        self.assertIn("--recipe", p.stdout)
        p = self.run_loupe("reproduce", "--help", env={"PATH": fake + ":/usr/bin:/bin"})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("usage: reproduce.py", p.stdout)

    def test_loupe_python_is_used_as_given(self):
        marker = tempfile.mkdtemp(prefix="loupe-py-")
        py = os.path.join(marker, "py")
        out = os.path.join(marker, "args")
        with open(py, "w") as f:
            f.write('#!/bin/sh\nprintf "%%s\\n" "$@" > %s\n' % out)
        os.chmod(py, 0o755)
        p = self.run_loupe("reproduce", "--quick", "--only", "mlp", env={"LOUPE_PYTHON": py})
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(out) as f:
            args = f.read().split("\n")
        self.assertTrue(args[0].endswith("/training/reproduce.py"), args)
        # reproduce.py is told to run this very binary for train-mlp and split.
        self.assertEqual(args[1:5], ["--loupe", os.path.realpath(LOUPE), "--quick", "--only"])
        p = self.run_loupe("train-vgg", "--epochs", "3", env={"LOUPE_PYTHON": py})
        with open(out) as f:
            args = f.read().split("\n")
        self.assertTrue(args[0].endswith("/training/train_vgg.py"), args)
        self.assertEqual(args[1:3], ["--epochs", "3"])

    def test_no_python_with_torch(self):
        p = self.run_loupe("train-vgg", env={"LOUPE_PYTHON": "/nonexistent/python3"})
        self.assertEqual(p.returncode, 1)
        self.assertIn("cannot run /nonexistent/python3", p.stderr)


class Completion(unittest.TestCase):
    """scripts/loupe-completion.bash completes subcommands and each subcommand's flags from its --help."""

    def complete(self, *words):
        script = ('source %s; COMP_WORDS=(%s); COMP_CWORD=%d; _loupe; printf "%%s\\n" "${COMPREPLY[@]}"'
                  % (COMPLETION, " ".join("'%s'" % w for w in (LOUPE,) + words), len(words)))
        p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return [w for w in p.stdout.split("\n") if w]

    def test_subcommands(self):
        self.assertEqual(self.complete("se"), ["serve"])
        self.assertEqual(sorted(self.complete("tr")), ["train-mlp", "train-vgg"])
        every = self.complete("")
        for cmd in ("serve", "train-mlp", "train-vgg", "reproduce", "probe", "predict", "--version"):
            self.assertIn(cmd, every)

    def test_flags_of_each_subcommand(self):
        self.assertEqual(self.complete("serve", "--max-ba"), ["--max-batch"])
        self.assertEqual(sorted(self.complete("serve", "--max-b")), ["--max-batch", "--max-body"])
        self.assertIn("--api-token", self.complete("serve", "--api"))
        self.assertIn("--epochs", self.complete("train-mlp", "--ep"))
        self.assertIn("--timeout", self.complete("probe", "--t"))
        self.assertIn("--recipe", self.complete("train-vgg", "--rec"))

    def test_files_after_path_flags(self):
        d = tempfile.mkdtemp(prefix="loupe-comp-")
        os.mkdir(os.path.join(d, "store-one"))
        self.assertEqual(self.complete("serve", "--models", os.path.join(d, "store-")), [os.path.join(d, "store-one")])


if __name__ == "__main__":
    unittest.main()
