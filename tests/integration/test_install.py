"""Integration test of the install layout: `cmake --install` into a temporary prefix, then the
installed binary serves the installed page and docs (not the source tree's).

    LOUPE_BUILD_DIR=build LOUPE_SOURCE_DIR=. /usr/bin/python3 tests/integration/test_install.py [Layout]

P/bin/loupe; P/lib/loupe/libloupe_shim_torch.so (with libtorch); P/share/loupe/static (the page), P/share/loupe/docs, P/share/loupe/training/*.py.
No model store needed: the daemon runs with an empty one.
"""
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loupe_fixture as fx  # noqa: E402

BUILD = os.environ.get("LOUPE_BUILD_DIR", "build")
SOURCE = os.environ.get("LOUPE_SOURCE_DIR", ".")
MARKER = b"<!-- the installed copy -->"


class Layout(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="loupe-install-")
        cls.prefix = os.path.join(cls.tmp, "prefix")
        subprocess.run(["cmake", "--install", BUILD, "--prefix", cls.prefix], check=True,
                       stdout=subprocess.DEVNULL)
        cls.share = os.path.join(cls.prefix, "share", "loupe")
        cls.loupe = os.path.join(cls.prefix, "bin", "loupe")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def assert_same_tree(self, src, dst, pattern=None):
        names = sorted(n for n in os.listdir(src) if pattern is None or n.endswith(pattern))
        self.assertTrue(names)
        cmp = filecmp.dircmp(src, dst, ignore=["__pycache__"])
        self.assertEqual(cmp.diff_files, [])
        for n in names:
            self.assertIn(n, os.listdir(dst))
            if os.path.isfile(os.path.join(src, n)):
                self.assertTrue(filecmp.cmp(os.path.join(src, n), os.path.join(dst, n), shallow=False), n)

    def test_files(self):
        self.assertTrue(os.access(self.loupe, os.X_OK))
        self.assert_same_tree(os.path.join(SOURCE, "static"), os.path.join(self.share, "static"))
        self.assert_same_tree(os.path.join(SOURCE, "docs"), os.path.join(self.share, "docs"))
        self.assert_same_tree(os.path.join(SOURCE, "training"), os.path.join(self.share, "training"), ".py")
        # Only the Python trainers: no C sources, no caches.
        for n in os.listdir(os.path.join(self.share, "training")):
            self.assertTrue(n.endswith(".py"), n)
        # With libtorch, the shim the binary loads on first use sits in lib/loupe (shim/lt_lazy.c).
        if os.path.exists(os.path.join(BUILD, "shim", "libloupe_shim_torch.so")):
            self.assertTrue(os.path.isfile(os.path.join(self.prefix, "lib", "loupe", "libloupe_shim_torch.so")))
        # The executable scripts stay executable.
        self.assertTrue(os.access(os.path.join(self.share, "training", "reproduce.py"), os.X_OK))

    def test_help_names_the_installed_default(self):
        out = subprocess.run([self.loupe, "serve", "--help"], capture_output=True, text=True).stdout
        self.assertIn("share/loupe/static", out)

    def test_serves_installed_page_and_docs(self):
        # Mark the installed copies: what / and /docs/ answer must come from them.
        page = os.path.join(self.share, "static", "index.html")
        with open(page, "ab") as f:
            f.write(MARKER)
        doc = os.path.join(self.share, "docs", "api.md")
        with open(doc, "ab") as f:
            f.write(MARKER)
        spec = os.path.join(self.share, "docs", "openapi.json")
        with open(spec, encoding="utf-8") as f:
            installed = json.load(f)
        installed["info"]["x-installed-copy"] = True
        with open(spec, "w", encoding="utf-8") as f:
            json.dump(installed, f)
        models = os.path.join(self.tmp, "models")
        os.makedirs(models, exist_ok=True)
        # From another folder, so that a relative ./static could not be what is served.
        cwd = os.getcwd()
        os.chdir(self.tmp)
        try:
            d = fx.Daemon(self.loupe, models)
        finally:
            os.chdir(cwd)
        try:
            st, _, body = d.request("GET", "/")
            self.assertEqual(st, 200)
            with open(page, "rb") as f:
                self.assertEqual(body, f.read())
            self.assertTrue(body.endswith(MARKER))
            st, _, body = d.request("GET", "/docs/api.md")
            self.assertEqual(st, 200)
            self.assertTrue(body.endswith(MARKER))
            st, _, body = d.request("GET", "/openapi.json")
            self.assertEqual((st, json.loads(body)), (200, installed))
        finally:
            self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1] + sys.argv[1:], verbosity=2)
