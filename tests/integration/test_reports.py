"""Integration tests of the reports routes (/v1/reports...): the real daemon, a hand-made reports folder.

    LOUPE_BIN=build/cli/loupe /usr/bin/python3 tests/integration/test_reports.py [Listing Report Figures Escape ...]

No model store needed: the daemon runs with an empty one. The folder holds a report as
training/reproduce.py writes it (made by hand: report.json, report.md, one PNG), a broken one, a
folder that is not a report, a hidden one, and symlinks that point out of the folder.
"""
import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loupe_fixture as fx  # noqa: E402

LOUPE = os.environ.get("LOUPE_BIN", "build/cli/loupe")
NAME = "seed-reproduction-quick"
SECRET = b"TOP-SECRET-REPORT-CONTENT"


def make_reports(tmp):
    """tmp/reports (the served folder) and tmp/outside (what must stay unreachable)."""
    root = os.path.join(tmp, "reports")
    outside = os.path.join(tmp, "outside")
    os.makedirs(outside)
    fx.make_report(os.path.join(root, NAME))
    fx.make_report(os.path.join(root, "full-run"), quick=False)
    # Outside: a report folder of its own and a secret "figure".
    fx.make_report(os.path.join(outside, "elsewhere"))
    with open(os.path.join(outside, "secret.png"), "wb") as f:
        f.write(SECRET)
    with open(os.path.join(outside, "elsewhere", "figures", "mlp_loss_relu.png"), "wb") as f:
        f.write(SECRET)
    # Inside: not a report, a broken report, a hidden one.
    os.makedirs(os.path.join(root, "runs-only", "runs"))
    os.makedirs(os.path.join(root, "broken"))
    with open(os.path.join(root, "broken", "report.json"), "w") as f:
        f.write("{ not json")
    fx.make_report(os.path.join(root, ".hidden"))
    with open(os.path.join(root, "notes.txt"), "w") as f:
        f.write("a file, not a report folder")
    # Symlinks out of the folder: a whole report, figures, and a report.md.
    os.symlink(os.path.join(outside, "elsewhere"), os.path.join(root, "escape"))
    os.symlink("/etc", os.path.join(root, "etc"))
    figs = os.path.join(root, NAME, "figures")
    os.symlink("/etc/passwd", os.path.join(figs, "passwd.png"))
    os.symlink(os.path.join(outside, "secret.png"), os.path.join(figs, "secret.png"))
    os.symlink("../../../outside/secret.png", os.path.join(figs, "relative.png"))
    # A symlink that stays inside is fine.
    os.symlink(os.path.join("..", "..", "full-run", "figures", "mlp_loss_relu.png"), os.path.join(figs, "linked.png"))
    lone = os.path.join(root, "md-escape")
    os.makedirs(lone)
    with open(os.path.join(lone, "report.json"), "w") as f:
        json.dump({"name": "md-escape", "figures": []}, f)
    os.symlink(os.path.join(outside, "secret.png"), os.path.join(lone, "report.md"))
    return root


class ReportsServed(unittest.TestCase):
    args = ()
    env = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="loupe-reports-")
        cls.root = make_reports(cls.tmp)
        cls.models = os.path.join(cls.tmp, "models")
        os.makedirs(cls.models)
        cls.d = fx.Daemon(LOUPE, cls.models, "--drain-grace", "0", *cls.extra_args(), env=cls.env)

    @classmethod
    def extra_args(cls):
        return ("--reports", cls.root)

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        fx.require(rc == 0, "loupe serve exited %d\n%s" % (rc, cls.d.read_log()))

    def get(self, path):
        return self.d.request("GET", path)

    def raw_get(self, path):
        """The path exactly as written (no client normalisation): (status, body bytes)."""
        raw = self.d.raw(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), body

    def assert_error(self, st, body, status, code):
        self.assertEqual(st, status, body)
        doc = json.loads(body)
        self.assertEqual(doc["error"]["code"], code, doc)
        self.assertTrue(doc["error"]["message"])


class Listing(ReportsServed):
    def test_list(self):
        st, h, body = self.get("/v1/reports")
        self.assertEqual(st, 200, body)
        self.assertEqual(h["content-type"], "application/json")
        doc = json.loads(body)
        self.assertEqual([r["name"] for r in doc["reports"]], ["full-run", "md-escape", NAME])
        r = doc["reports"][2]
        self.assertEqual(r, {"name": NAME, "date": "2026-01-02T03:04:05+00:00", "commit": "abc1234", "quick": True,
                             "figures": ["mlp_loss_relu.png"]})  # missing.png is not on disk
        self.assertFalse(doc["reports"][0]["quick"])
        self.assertEqual([s["name"] for s in doc["skipped"]], ["broken"])
        self.assertIn("report.json", doc["skipped"][0]["error"])
        self.assertNotIn(self.tmp, body.decode())  # no file system paths

    def test_trailing_slash_and_head(self):
        st, _, body = self.get("/v1/reports/")
        self.assertEqual(st, 200)
        st, h, body = self.d.request("HEAD", "/v1/reports")
        self.assertEqual((st, body), (200, b""))

    def test_post_not_allowed(self):
        st, h, body = self.d.request("POST", "/v1/reports", b"{}", {"Content-Type": "application/json"})
        self.assert_error(st, body, 405, "method_not_allowed")
        self.assertIn("GET", h["allow"])


class Report(ReportsServed):
    def test_report(self):
        st, h, body = self.get("/v1/reports/" + NAME)
        self.assertEqual(st, 200, body)
        doc = json.loads(body)
        with open(os.path.join(self.root, NAME, "report.json")) as f:
            want = json.load(f)
        with open(os.path.join(self.root, NAME, "report.md"), encoding="utf-8") as f:
            md = f.read()
        self.assertEqual(doc.pop("markdown"), md)
        self.assertIn("KL(y ‖ p)", md)
        self.assertEqual(doc, want)

    def test_unknown_and_not_a_report(self):
        for name in ("nope", "runs-only", "notes.txt", "etc", "escape"):
            st, _, body = self.get("/v1/reports/" + name)
            self.assert_error(st, body, 404, "not_found")
            self.assertNotIn(SECRET, body)

    def test_broken(self):
        st, _, body = self.get("/v1/reports/broken")
        self.assert_error(st, body, 500, "internal")
        self.assertNotIn(self.tmp.encode(), body)

    def test_markdown_symlink_out(self):
        st, _, body = self.get("/v1/reports/md-escape")
        self.assertEqual(st, 200, body)
        self.assertIsNone(json.loads(body)["markdown"])
        self.assertNotIn(SECRET, body)

    def test_bad_names(self):
        for path in ("/v1/reports/.hidden", "/v1/reports/%2ehidden", "/v1/reports/a%20b", "/v1/reports/a..b",
                     "/v1/reports/..%5c..%5cetc", "/v1/reports/%ff", "/v1/reports/" + "x" * 300,
                     "/v1/reports/..", "/v1/reports/.", "/v1/reports/%2e%2e", "/v1/reports/%2E%2e"):
            st, body = self.raw_get(path)
            self.assert_error(st, body, 400, "bad_request")


class Figures(ReportsServed):
    def test_figure(self):
        st, h, body = self.get("/v1/reports/%s/figures/mlp_loss_relu.png" % NAME)
        self.assertEqual((st, h["content-type"]), (200, "image/png"))
        with open(os.path.join(self.root, NAME, "figures", "mlp_loss_relu.png"), "rb") as f:
            self.assertEqual(body, f.read())
        st, h, body = self.get("/v1/reports/%s/figures/linked.png" % NAME)  # a symlink that stays inside
        self.assertEqual((st, body[:8]), (200, b"\x89PNG\r\n\x1a\n"))

    def test_unknown(self):
        for path in ("/v1/reports/%s/figures/missing.png" % NAME, "/v1/reports/nope/figures/mlp_loss_relu.png",
                     "/v1/reports/runs-only/figures/a.png"):
            st, _, body = self.get(path)
            self.assert_error(st, body, 404, "not_found")

    def test_bad_names(self):
        for f in ("report.json", "x.PNG", ".png", ".hidden.png", "a..png", "%2e%2e", "..", "a%20b.png", "png"):
            st, body = self.raw_get("/v1/reports/%s/figures/%s" % (NAME, f))
            self.assert_error(st, body, 400, "bad_request")


class Escape(ReportsServed):
    """Nothing outside the reports folder: traversal in every spelling, symlinks out."""

    def test_traversal(self):
        paths = [
            "/v1/reports/../../outside/secret.png", "/v1/reports/%2e%2e/outside/secret.png",
            "/v1/reports/..%2f..%2foutside%2fsecret.png", "/v1/reports/..%2F..%2Fetc%2Fpasswd",
            "/v1/reports/%s/figures/../../../outside/secret.png" % NAME,
            "/v1/reports/%s/figures/..%%2f..%%2f..%%2foutside%%2fsecret.png" % NAME,
            "/v1/reports/%s/figures/%%2e%%2e%%2f%%2e%%2e%%2f%%2e%%2e%%2foutside%%2fsecret.png" % NAME,
            "/v1/reports/%s%%2f..%%2f..%%2foutside/figures/secret.png" % NAME,
            "/v1/reports/%2e%2e%2foutside/figures/secret.png", "/v1/reports/..%2foutside/figures/secret.png",
            "/v1/reports/%s/figures/passwd.png" % NAME, "/v1/reports/%s/figures/secret.png" % NAME,
            "/v1/reports/%s/figures/relative.png" % NAME, "/v1/reports/escape", "/v1/reports/escape/figures/mlp_loss_relu.png",
            "/v1/reports/etc/figures/passwd.png", "/v1/reports/etc", "/v1/reports/%2fetc%2fpasswd",
            "//v1/reports/../../etc/passwd", "/reports/%s/report.json" % NAME,
        ]
        for path in paths:
            st, body = self.raw_get(path)
            self.assertIn(st, (400, 404), (path, st, body[:200]))
            self.assertNotIn(SECRET, body, path)
            self.assertNotIn(b"root:", body, path)
            doc = json.loads(body)
            self.assertIn(doc["error"]["code"], ("bad_request", "not_found"), path)

    def test_nul(self):
        # libmicrohttpd decodes %00 and the path ends there: "/v1/reports/" (the listing), never a file.
        st, body = self.raw_get("/v1/reports/%00/figures/secret.png")
        self.assertNotIn(SECRET, body)
        self.assertIn(b'"reports"', body)

    def test_listing_shows_nothing_outside(self):
        _, _, body = self.get("/v1/reports")
        names = [r["name"] for r in json.loads(body)["reports"]]
        self.assertNotIn("escape", names)
        self.assertNotIn(".hidden", names)
        self.assertNotIn("elsewhere", names)


class Env(ReportsServed):
    """LOUPE_REPORTS instead of the flag; a missing folder lists nothing; a folder made later is served."""

    @classmethod
    def setUpClass(cls):
        cls.later = tempfile.mkdtemp(prefix="loupe-reports-later-")
        shutil.rmtree(cls.later)
        cls.env = {"LOUPE_REPORTS": cls.later}
        super().setUpClass()

    @classmethod
    def extra_args(cls):
        return ()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.later, ignore_errors=True)

    def test_missing_then_made(self):
        st, _, body = self.get("/v1/reports")
        self.assertEqual((st, json.loads(body)), (200, {"reports": [], "skipped": []}))
        st, _, body = self.get("/v1/reports/" + NAME)
        self.assert_error(st, body, 404, "not_found")
        fx.make_report(os.path.join(self.later, NAME))
        st, _, body = self.get("/v1/reports")
        self.assertEqual([r["name"] for r in json.loads(body)["reports"]], [NAME])
        st, _, body = self.get("/v1/reports/%s/figures/mlp_loss_relu.png" % NAME)
        self.assertEqual((st, body[:8]), (200, b"\x89PNG\r\n\x1a\n"))

    def test_help_names_the_flag(self):
        import subprocess
        out = subprocess.run([LOUPE, "serve", "--help"], capture_output=True, text=True).stdout
        self.assertIn("--reports DIR", out)
        self.assertIn("LOUPE_REPORTS", out)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1] + sys.argv[1:], verbosity=2)
