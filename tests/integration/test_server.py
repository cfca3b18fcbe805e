"""Integration tests of `loupe serve`: the real daemon on a free port, real HTTP.

    LOUPE_BIN=build/cli/loupe LOUPE_STORE=/tmp/store /usr/bin/python3 test_server.py --make-store
    LOUPE_BIN=build/cli/loupe LOUPE_STORE=/tmp/store /usr/bin/python3 test_server.py Routes BadInput ...

LOUPE_QUICK=1 (the sanitizer build) checks 500 test images instead of 10,000.
"""
import base64
import concurrent.futures as cf
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loupe_fixture as fx  # noqa: E402

LOUPE = os.environ.get("LOUPE_BIN", "build/cli/loupe")
STORE = os.environ.get("LOUPE_STORE", "/tmp/loupe-test-store")
QUICK = os.environ.get("LOUPE_QUICK", "0") == "1"
IMAGES, LABELS = fx.test_set()


def png(i):
    return fx.png_gray(IMAGES[i])


def pixels(i):
    return (IMAGES[i].astype(np.float64) / 255.0).tolist()


class Served(unittest.TestCase):
    """One daemon for the whole class."""
    args = ("--max-body", "1M", "--threads", "4", "--drain-grace", "0")
    env = None

    @classmethod
    def setUpClass(cls):
        cls.d = fx.Daemon(LOUPE, STORE, *cls.args, env=cls.env)
        st, _, cls.baseline = cls.d.json("POST", "/v1/models/alpha/predict", png(0), {"Content-Type": "image/png"})
        fx.require(st == 200, cls.baseline)

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        fx.require(rc == 0, "loupe serve exited %d\n%s" % (rc, cls.d.read_log()))

    def post(self, path, body, ctype="image/png", headers=None, conn=None):
        h = {"Content-Type": ctype} if ctype else {}
        h.update(headers or {})
        return self.d.json("POST", path, body, h, conn)

    def predict(self, body, ctype="image/png", query="", model="alpha"):
        return self.post("/v1/models/%s/predict%s" % (model, query), body, ctype)

    def assert_error(self, st, body, status, code=None):
        self.assertEqual(st, status, body)
        self.assertIsInstance(body, dict)
        self.assertIsInstance(body.get("error"), dict, body)
        self.assertTrue(body["error"]["message"], body)
        if code:
            self.assertEqual(body["error"]["code"], code, body)

    def assert_still_serving(self):
        """After a bad request: the daemon answers, with the same predictions as before."""
        st, _, b = self.predict(png(0))
        self.assertEqual(st, 200, b)
        self.assertEqual(b["probabilities"], self.baseline["probabilities"])


class Routes(Served):
    def test_healthz(self):
        st, _, b = self.d.json("GET", "/healthz")
        self.assertEqual((st, b["status"]), (200, "ok"))

    def test_readyz(self):
        st, _, b = self.d.json("GET", "/readyz")
        self.assertEqual((st, b["status"], b["models"]), (200, "ready", 3))

    def test_head(self):
        st, h, body = self.d.request("HEAD", "/healthz")
        self.assertEqual((st, body), (200, b""))

    def test_root_page_is_the_browser_page(self):
        st, h, body = self.d.request("GET", "/")
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/html"))
        self.assertIn(b'<script src="app.js"', body)
        for path, ctype in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
            st, h, body = self.d.request("GET", path)
            self.assertEqual((st, h["content-type"].split(";")[0]), (200, ctype), path)
            self.assertNotIn(b"http://", body, path)  # everything local: no external assets
            self.assertNotIn(b"https://", body, path)

    def test_root_page_lists_models(self):
        """Without a static/index.html, / is a plain list of the models."""
        import tempfile
        empty = tempfile.mkdtemp(prefix="loupe-no-static-")
        d = fx.Daemon(LOUPE, STORE, "--static", empty, "--drain-grace", "0")
        try:
            st, h, body = d.request("GET", "/")
        finally:
            self.assertEqual(d.stop(), 0)
            os.rmdir(empty)
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/html"))
        for name in (b"alpha", b"beta", b"zero", b"docs/api.md"):
            self.assertIn(name, body)

    def test_docs_served(self):
        st, h, body = self.d.request("GET", "/docs/api.md")
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/markdown"))
        self.assertIn(b"/v1/models", body)

    def test_models_list(self):
        st, _, b = self.d.json("GET", "/v1/models")
        self.assertEqual(st, 200)
        names = [m["name"] for m in b["models"]]
        self.assertEqual(names, ["alpha", "beta", "zero"])  # broken/ is skipped
        for m in b["models"]:
            self.assertEqual(m["kind"], "mlp")
            self.assertEqual(m["classes"], fx.CLASSES)
            self.assertEqual(m["input"]["height"], 28)
        acc = {m["name"]: m["test_accuracy"] for m in b["models"]}
        self.assertIsNone(acc["zero"])
        self.assertEqual(b["default"], max(("alpha", "beta"), key=lambda n: acc[n]))

    def test_broken_model_logged(self):
        self.assertIn("model broken: skipped: model.json", self.d.read_log())

    def test_model_detail(self):
        st, _, b = self.d.json("GET", "/v1/models/alpha")
        self.assertEqual(st, 200)
        with open(os.path.join(STORE, "alpha", "metrics.json")) as f:
            metrics = json.load(f)
        with open(os.path.join(STORE, "alpha", "history.json")) as f:
            history = json.load(f)
        self.assertEqual(b["manifest"]["mlp"]["sizes"], [784, 128, 96, 10])
        self.assertEqual(b["metrics"]["confusion"], metrics["confusion"])
        self.assertAlmostEqual(b["metrics"]["test_accuracy"], metrics["test_accuracy"], places=12)
        self.assertEqual(json.dumps(b["history"], sort_keys=True)[:20], json.dumps(history, sort_keys=True)[:20])

    def test_unknown_model(self):
        for method, path in (("GET", "/v1/models/nope"), ("POST", "/v1/models/nope/predict"),
                             ("POST", "/v1/models/nope/saliency")):
            st, _, b = self.d.json(method, path, png(0) if method == "POST" else None)
            self.assert_error(st, b, 404, "model_not_found")

    def test_unknown_route(self):
        st, _, b = self.d.json("GET", "/v1/nothing/here")
        self.assert_error(st, b, 404, "not_found")

    def test_method_not_allowed(self):
        for method, path, allow in (("GET", "/v1/models/alpha/predict", "POST"), ("DELETE", "/v1/models", "GET, HEAD"),
                                    ("POST", "/healthz", "GET, HEAD"), ("PUT", "/predict", "POST")):
            st, h, b = self.d.json(method, path, b"" if method != "GET" else None)
            self.assert_error(st, b, 405, "method_not_allowed")
            self.assertEqual(h.get("allow"), allow)

    def test_admin_off_without_token(self):
        st, _, b = self.post("/v1/admin/reload", b"", None)
        self.assert_error(st, b, 404)


class Cors(Served):
    args = Served.args + ("--cors-origin", "https://example.com")

    def test_preflight_and_headers(self):
        st, h, body = self.d.request("OPTIONS", "/v1/models/alpha/predict",
                                     headers={"Origin": "https://example.com",
                                              "Access-Control-Request-Method": "POST"})
        self.assertEqual((st, body), (204, b""))
        self.assertEqual(h["access-control-allow-origin"], "https://example.com")
        self.assertIn("POST", h["access-control-allow-methods"])
        self.assertIn("Content-Type", h["access-control-allow-headers"])
        st, h, _ = self.d.request("GET", "/healthz")
        self.assertEqual(h["access-control-allow-origin"], "https://example.com")

    def test_other_origins_not_allowed(self):
        """A page on any other origin (or a request without Origin) gets the one configured origin,
        never its own, never '*' and never credentials, so a browser refuses it the answer and
        the preflight; Vary: Origin keeps caches from mixing answers."""
        png0 = png(0)
        for origin in ("https://evil.example", "https://example.com.evil.example", "http://example.com",
                       "https://EXAMPLE.com", "null", None):
            hdrs = {"Origin": origin} if origin else {}
            for method, path, body, extra in (
                    ("OPTIONS", "/v1/models/alpha/predict", None, {"Access-Control-Request-Method": "POST",
                                                                   "Access-Control-Request-Headers": "content-type"}),
                    ("GET", "/healthz", None, {}),
                    ("POST", "/v1/models/alpha/predict", png0, {"Content-Type": "image/png"}),
                    ("GET", "/v1/models/nope", None, {})):
                st, h, out = self.d.request(method, path, body, dict(hdrs, **extra))
                self.assertEqual(st, {"OPTIONS": 204, "POST": 200}.get(method, 200 if path == "/healthz" else 404),
                                 (origin, method, path, out[:200]))
                self.assertEqual(h.get("access-control-allow-origin"), "https://example.com", (origin, method, path))
                self.assertNotIn("access-control-allow-credentials", h, (origin, method, path))
                self.assertIn("Origin", [v.strip() for v in h.get("vary", "").split(",")], (origin, method, path))

    def test_no_cors_without_the_flag(self):
        """Without --cors-origin no answer carries a CORS header, whatever the Origin: a browser
        refuses every cross-origin read and preflight."""
        d = fx.Daemon(LOUPE, STORE, "--drain-grace", "0")
        try:
            for method, path, body, extra in (
                    ("OPTIONS", "/v1/models/alpha/predict", None, {"Access-Control-Request-Method": "POST"}),
                    ("GET", "/healthz", None, {}),
                    ("POST", "/v1/models/alpha/predict", png(0), {"Content-Type": "image/png"})):
                st, h, out = d.request(method, path, body, dict({"Origin": "https://example.com"}, **extra))
                self.assertIn(st, (200, 204), out[:200])
                self.assertEqual([k for k in h if k.startswith("access-control-")], [], (method, path, h))
        finally:
            self.assertEqual(d.stop(), 0)


class Static(Served):
    @classmethod
    def setUpClass(cls):
        import tempfile
        cls.tmp = tempfile.mkdtemp(prefix="loupe-static-")
        root = os.path.join(cls.tmp, "static")
        os.makedirs(os.path.join(root, "css"))
        with open(os.path.join(root, "index.html"), "w") as f:
            f.write("<html>page</html>")
        with open(os.path.join(root, "css", "a.css"), "w") as f:
            f.write("body{}")
        with open(os.path.join(cls.tmp, "secret.txt"), "w") as f:
            f.write("TOP-SECRET-CONTENT")
        os.symlink(os.path.join(cls.tmp, "secret.txt"), os.path.join(root, "link.txt"))
        cls.args = Served.args + ("--static", root)
        super().setUpClass()

    def test_index_and_types(self):
        st, h, body = self.d.request("GET", "/")
        self.assertEqual((st, body), (200, b"<html>page</html>"))
        st, h, body = self.d.request("GET", "/css/a.css")
        self.assertEqual((st, h["content-type"].split(";")[0], body), (200, "text/css", b"body{}"))

    def test_no_escape(self):
        for path in ("/../secret.txt", "/css/../../secret.txt", "/%2e%2e/secret.txt", "/css/%2E%2E/%2e%2e/secret.txt",
                     "/link.txt", "/..%2fsecret.txt", "/.%2e/secret.txt", "//etc/passwd", "/css/..", "/.hidden"):
            raw = self.d.raw(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
            self.assertNotIn(b"TOP-SECRET", raw, path)
            self.assertTrue(raw.startswith(b"HTTP/1.1 404") or raw.startswith(b"HTTP/1.1 400"), (path, raw[:80]))


class Inputs(Served):
    def check_same(self, st, b, ref=None):
        self.assertEqual(st, 200, b)
        ref = ref or self.baseline
        self.assertEqual(b["index"], ref["index"])
        np.testing.assert_allclose(b["probabilities"], ref["probabilities"], rtol=0, atol=2e-6)

    def test_predict_shape(self):
        b = self.baseline
        self.assertEqual(b["model"], "alpha")
        self.assertEqual(b["class"], fx.CLASSES[b["index"]])
        self.assertEqual(len(b["probabilities"]), 10)
        self.assertAlmostEqual(sum(b["probabilities"]), 1.0, places=5)
        self.assertEqual(b["probability"], max(b["probabilities"]))
        p = np.array(b["probabilities"], np.float64)
        h = -(p[p > 0] * np.log(p[p > 0])).sum()
        self.assertAlmostEqual(b["entropy_nats"], h, places=5)
        self.assertAlmostEqual(b["entropy_bits"], h / math.log(2), places=5)
        self.assertEqual(len(b["top_k"]), 5)
        self.assertEqual(b["top_k"][0]["index"], b["index"])
        self.assertFalse(b["inverted"])

    def test_timing(self):
        """timing_ms: each part took time, the parts fit in the total (decoding and the forward
        pass happen between the request's arrival and its answer), and the total fits in the
        time this client waited for the answer."""
        for body, ctype in ((png(1), "image/png"), (json.dumps({"pixels": pixels(1)}).encode(), "application/json")):
            c = self.d.conn()
            c.connect()  # the wall time below excludes the TCP handshake but includes the upload
            t = time.perf_counter()
            st, _, b = self.post("/v1/models/alpha/predict", body, ctype, conn=c)
            wall = (time.perf_counter() - t) * 1e3
            c.close()
            self.assertEqual(st, 200, b)
            tm = b["timing_ms"]
            self.assertEqual(sorted(tm), ["decode", "inference", "total"])
            for k, v in tm.items():
                self.assertIsInstance(v, float, k)
                self.assertGreater(v, 0, (k, tm))
            self.assertLessEqual(tm["decode"] + tm["inference"], tm["total"] * (1 + 1e-9), tm)
            self.assertLess(tm["total"], wall, (tm, wall))

    def test_top_k(self):
        st, _, b = self.predict(png(0), query="?top_k=3")
        self.assertEqual([e["index"] for e in b["top_k"]],
                         list(np.argsort(-np.array(self.baseline["probabilities"]), kind="stable")[:3]))
        st, _, b = self.predict(png(0), query="?top_k=100")
        self.assertEqual(len(b["top_k"]), 10)

    def test_png_content_types(self):
        for ct in ("image/png", "application/octet-stream", "application/x-www-form-urlencoded", None):
            self.check_same(*self.predict(png(0), ct)[::2])

    def test_default_route(self):
        st, _, models = self.d.json("GET", "/v1/models")
        st, _, b = self.post("/predict", png(0), "application/x-www-form-urlencoded")  # what curl --data-binary sends
        self.assertEqual((st, b["model"]), (200, models["default"]))

    def test_jpeg_baseline_and_progressive(self):
        for kw in ({"quality": 100}, {"quality": 100, "progressive": True}):
            st, _, b = self.predict(fx.pil_encode(IMAGES[0], "JPEG", **kw), "image/jpeg")
            self.assertEqual(st, 200, b)
            self.assertEqual(b["index"], self.baseline["index"])
            np.testing.assert_allclose(b["probabilities"], self.baseline["probabilities"], atol=0.05)

    @staticmethod
    def gray_of(px, luma=(0.299, 0.587, 0.114), round_alpha=True):
        """The gray image the daemon makes of 8-bit [h,w,ch] pixels, computed here from docs/api.md's
        rule (BT.601 luminance, alpha over black) as core/img.c does it: alpha is first applied to
        each 8-bit sample with rounding ((v*a + 127) // 255), then the luminance is taken in double
        precision and divided by 255, then stored as float32. luma and round_alpha give wrong rules."""
        px = px.astype(np.int64)
        ch = px.shape[2]
        if ch in (2, 4):
            a = px[..., ch - 1:]
            px = (px[..., :ch - 1] * a + 127) // 255 if round_alpha else px[..., :ch - 1] * a / 255.0
        px = px.astype(np.float64)
        if px.shape[2] == 1:
            g = px[..., 0] / 255.0
        else:
            g = (luma[0] * px[..., 0] + luma[1] * px[..., 1] + luma[2] * px[..., 2]) / 255.0
        return np.clip(g, 0.0, 1.0).astype(np.float32)

    def predict_gray(self, g):
        """Predict on float32 gray pixels sent as JSON: the daemon reads each number as a double
        and stores it as float, so the model sees exactly g."""
        st, _, b = self.predict(json.dumps({"pixels": [float(v) for v in g.reshape(-1)]}).encode(),
                                "application/json", "?invert=false")
        self.assertEqual(st, 200, b)
        return b

    def test_png_colour_types(self):
        """Each PNG colour type decodes to exactly the gray image docs/api.md's rule gives: the
        model's answer for the PNG equals, bit for bit, its answer for those gray values sent as
        JSON. First the test image in every colour type (all must give its own gray values), then
        random colours and alpha, where a wrong rule (BT.709 weights, alpha not rounded to 8 bits)
        would give other values and another answer."""
        from PIL import Image
        import io

        def png_of(im):
            buf = io.BytesIO()
            im.save(buf, "PNG")
            return buf.getvalue()

        img = Image.fromarray(IMAGES[0])
        own = (IMAGES[0] / 255.0).astype(np.float32)
        variants = {
            "rgb": img.convert("RGB"), "rgba": img.convert("RGBA"), "la": img.convert("LA"),
            "palette": img.convert("P"),
            "i16": Image.fromarray(IMAGES[0].astype(np.uint16) * 257, "I;16"),
        }
        for name, im in variants.items():
            self.assertEqual(im.mode, {"i16": "I;16", "palette": "P"}.get(name, name.upper()), name)
            st, _, b = self.predict(png_of(im), query="?invert=false")
            self.assertEqual(st, 200, (name, b))
            if name in ("rgb", "rgba", "la"):
                np.testing.assert_array_equal(self.gray_of(np.asarray(im).reshape(28, 28, -1)), own, name)
            self.assertEqual(b["probabilities"], self.baseline["probabilities"], name)

        rng = np.random.default_rng(11)
        colour = rng.integers(0, 256, (28, 28, 4), dtype=np.uint8)
        colour[..., 3] = rng.choice(np.array([0, 1, 77, 128, 200, 254, 255], np.uint8), (28, 28))
        for mode, px in (("RGB", colour[..., :3]), ("RGBA", colour), ("LA", colour[..., 2:])):
            want = self.gray_of(px)
            st, _, b = self.predict(png_of(Image.fromarray(px, mode)), query="?invert=false")
            self.assertEqual(st, 200, (mode, b))
            self.assertEqual(b["probabilities"], self.predict_gray(want)["probabilities"], mode)
            wrong = self.gray_of(px, luma=(0.2126, 0.7152, 0.0722)) if mode != "LA" else \
                self.gray_of(px, round_alpha=False)
            self.assertFalse(np.array_equal(wrong, want), mode)
            self.assertNotEqual(b["probabilities"], self.predict_gray(wrong)["probabilities"], mode)
        # A palette with transparency (tRNS): each entry's colour and alpha, as for RGBA.
        pal = rng.integers(0, 256, (16, 3), dtype=np.uint8)
        idx = rng.integers(0, 16, (28, 28), dtype=np.uint8)
        im = Image.fromarray(idx, "P")
        im.putpalette(pal.reshape(-1).tolist())
        alpha = rng.integers(0, 256, 16, dtype=np.uint8)
        buf = io.BytesIO()
        im.save(buf, "PNG", transparency=alpha.tobytes())
        st, _, b = self.predict(buf.getvalue(), query="?invert=false")
        self.assertEqual(st, 200, b)
        want = self.gray_of(np.concatenate([pal[idx], alpha[idx][..., None]], axis=2))
        self.assertEqual(b["probabilities"], self.predict_gray(want)["probabilities"])

    def test_large_image_resized(self):
        big = np.kron(IMAGES[0], np.ones((8, 8), np.uint8))  # 224x224, area-averages back exactly
        self.check_same(*self.predict(fx.png_gray(big))[::2])

    def test_invert(self):
        inv = fx.png_gray(255 - IMAGES[0])
        st, _, b = self.predict(inv)
        self.assertTrue(b["inverted"])
        self.check_same(st, b)
        st, _, b = self.predict(inv, query="?invert=false")
        self.assertFalse(b["inverted"])
        st, _, b = self.predict(png(0), query="?invert=true")
        self.assertTrue(b["inverted"])

    def test_multipart(self):
        body, ct = fx.multipart("image", png(0), extra={"note": "hello"})
        self.check_same(*self.predict(body, ct)[::2])

    def test_json_pixels_flat_and_rows(self):
        rows = pixels(0)
        flat = [v for r in rows for v in r]
        self.check_same(*self.predict(json.dumps({"pixels": flat}).encode(), "application/json")[::2])
        self.check_same(*self.predict(json.dumps({"pixels": rows}).encode(), "application/json")[::2])
        # curl -d '{"pixels": ...}' sends x-www-form-urlencoded: sniffed as JSON.
        self.check_same(*self.predict(json.dumps({"pixels": rows}).encode(), "application/x-www-form-urlencoded")[::2])

    def test_json_base64(self):
        b64 = base64.b64encode(png(0)).decode()
        self.check_same(*self.predict(json.dumps({"image": b64}).encode(), "application/json")[::2])
        url = "data:image/png;base64," + b64
        self.check_same(*self.predict(json.dumps({"image": url}).encode(), "application/json")[::2])

    def test_saliency_png(self):
        for q, size in (("", 28), ("?scale=4", 112), ("?overlay=1&scale=2", 56), ("?target=Sneaker", 28)):
            st, h, body = self.d.request("POST", "/v1/models/alpha/saliency" + q, png(0), {"Content-Type": "image/png"})
            self.assertEqual(st, 200, body[:200])
            self.assertEqual(h["content-type"], "image/png")
            from PIL import Image
            import io
            im = Image.open(io.BytesIO(body))
            self.assertEqual(im.size, (size, size), q)

    def test_saliency_json(self):
        st, _, b = self.post("/v1/models/alpha/saliency?format=json", png(0))
        self.assertEqual(st, 200, b)
        self.assertEqual(b["target"]["index"], self.baseline["index"])
        m = np.array(b["saliency"])
        self.assertEqual(m.shape, (28, 28))
        self.assertTrue(np.all(np.isfinite(m)))
        self.assertGreaterEqual(m.min(), 0.0)
        self.assertEqual(m.max(), 1.0)
        # The 99th percentile is the top: about 1% of the pixels clip at 1.
        self.assertLessEqual((m >= 1.0).sum(), 10)
        for t in ("3", "Dress", "dress"):
            st, _, b = self.post("/v1/models/alpha/saliency?format=json&target=" + t, png(0))
            self.assertEqual((st, b["target"]["index"], b["target"]["class"]), (200, 3, "Dress"))

    def test_saliency_matches_numpy(self):
        """|d logit_t / d x| from the weights in weights.safetensors, normalised as documented."""
        import struct
        with open(os.path.join(STORE, "alpha", "weights.safetensors"), "rb") as f:
            raw = f.read()
        n, = struct.unpack("<Q", raw[:8])
        hdr = json.loads(raw[8:8 + n])
        t = {k: np.frombuffer(raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]], "<f4").reshape(v["shape"])
             for k, v in hdr.items() if k != "__metadata__"}
        a = IMAGES[0].reshape(-1).astype(np.float64) / 255
        n_layers = len(t) // 2
        masks = []
        for i in range(n_layers - 1):  # relu hidden layers; the last is linear
            z = t["layers.%d.weight" % i] @ a + t["layers.%d.bias" % i]
            masks.append(z > 0)
            a = np.maximum(z, 0)
        delta = np.zeros(10)
        delta[self.baseline["index"]] = 1.0
        for i in range(n_layers - 1, -1, -1):
            delta = delta @ t["layers.%d.weight" % i]
            if i > 0:
                delta = delta * masks[i - 1]
        g = np.abs(delta)
        top = np.percentile(g, 99)
        want = np.minimum(g / top, 1.0)
        st, _, b = self.post("/v1/models/alpha/saliency?format=json", png(0))
        np.testing.assert_allclose(np.array(b["saliency"]).reshape(-1), want, atol=1e-4)

    def test_saliency_zero_gradient(self):
        st, _, b = self.post("/v1/models/zero/saliency?format=json", png(0))
        self.assertEqual(st, 200, b)
        self.assertEqual(np.array(b["saliency"]).tolist(), np.zeros((28, 28)).tolist())
        st, h, body = self.d.request("POST", "/v1/models/zero/saliency", png(0), {"Content-Type": "image/png"})
        self.assertEqual((st, h["content-type"]), (200, "image/png"))

    def test_keep_alive(self):
        c = self.d.conn()
        for _ in range(20):
            self.check_same(*self.predict_on(c)[::2])
        c.close()

    def predict_on(self, c):
        return self.post("/v1/models/alpha/predict", png(0), conn=c)


class BadInput(Served):
    """Each bad input is its own case; after each the daemon answers with the same predictions."""

    def tearDown(self):
        self.assert_still_serving()

    def bad(self, body, ctype, status, code=None, query="", route="/v1/models/alpha/predict"):
        st, _, b = self.post(route + query, body, ctype)
        self.assert_error(st, b, status, code)
        return b

    def raw_json(self, request):
        """Send raw request bytes; (status, parsed JSON body). The body must be valid UTF-8 JSON."""
        with socket.create_connection(("127.0.0.1", self.d.port), timeout=10) as sk:
            sk.sendall(request)
            data = b""
            while True:
                chunk = sk.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return status, json.loads(body.decode("utf-8"))  # raises on invalid UTF-8

    def test_invalid_utf8_in_what_the_error_quotes(self):
        """Bytes that are not UTF-8 in a path, a model name, a query value or a
        header: the 4xx they deserve, in valid UTF-8 JSON (they were 500
        out_of_memory: Jansson refused the message)."""
        close = b"Connection: close\r\nHost: x\r\n"
        cases = [
            (b"GET /%ff HTTP/1.1\r\n" + close + b"\r\n", 404),
            (b"GET /v1/models/%ff HTTP/1.1\r\n" + close + b"\r\n", 404),
            (b"GET /v1/models/" + b"%c3%a9" * 300 + b"x HTTP/1.1\r\n" + close + b"\r\n", 404),
        ]
        body = png(0)
        cases.append((b"POST /v1/models/alpha/predict?invert=%ff HTTP/1.1\r\n" + close +
                      b"Content-Type: image/png\r\nContent-Length: %d\r\n\r\n" % len(body) + body, 400))
        cases.append((b"POST /v1/models/alpha/predict HTTP/1.1\r\n" + close +
                      b"Content-Type: image/\xff\xfe\r\nContent-Length: %d\r\n\r\n" % len(body) + body, 415))
        for req, want in cases:
            st, b = self.raw_json(req)
            self.assertEqual(st, want, (req[:60], b))
            self.assertIn("error", b)
            self.assertNotEqual(b["error"].get("code"), "out_of_memory", b)

    def test_empty_body(self):
        self.bad(b"", "image/png", 400, "empty_body")

    def test_empty_body_saliency(self):
        self.bad(b"", "image/png", 400, "empty_body", route="/v1/models/alpha/saliency")

    def test_unsupported_content_type(self):
        self.bad(png(0), "text/plain", 415, "unsupported_media_type")

    def test_gif_content_type(self):
        self.bad(b"GIF89a....", "image/gif", 415, "unsupported_media_type")

    def test_truncated_png(self):
        self.bad(png(0)[:60], "image/png", 400, "bad_image")

    def test_corrupted_png(self):
        data = bytearray(png(0))
        for i in range(45, 80):
            data[i] ^= 0x5A
        self.bad(bytes(data), "image/png", 400, "bad_image")

    def test_truncated_jpeg(self):
        self.bad(fx.pil_encode(IMAGES[0], "JPEG")[:100], "image/jpeg", 400, "bad_image")

    def test_corrupted_jpeg(self):
        data = bytearray(fx.pil_encode(IMAGES[0], "JPEG"))
        dht = data.index(b"\xff\xc4")  # garble the Huffman tables
        for i in range(dht + 5, dht + 40):
            data[i] = 0xFF
        self.bad(bytes(data), "image/jpeg", 400, "bad_image")

    def test_non_image_bytes(self):
        self.bad(os.urandom(1000), "image/png", 415, "unsupported_media_type")

    def test_zero_dimensions(self):
        self.bad(fx.png_gray(IMAGES[0], width=0), "image/png", 400, "bad_dimensions")

    def test_json_not_object(self):
        self.bad(b"[1, 2, 3]", "application/json", 400, "bad_json")

    def test_json_invalid(self):
        self.bad(b"{\"pixels\": [", "application/json", 400, "bad_json")

    def test_json_no_known_key(self):
        self.bad(b"{\"foo\": 1}", "application/json", 400, "bad_json")

    def test_wrong_pixel_count(self):
        b = self.bad(json.dumps({"pixels": [0.5] * 783}).encode(), "application/json", 400, "bad_input")
        self.assertIn("783", b["error"]["message"])

    def test_wrong_row_length(self):
        rows = pixels(0)
        rows[5] = rows[5][:27]
        self.bad(json.dumps({"pixels": rows}).encode(), "application/json", 400, "bad_input")

    def test_nan_pixel(self):
        self.bad(b"{\"pixels\": [NaN" + b", 0" * 783 + b"]}", "application/json", 400, "bad_json")

    def test_huge_pixel(self):
        self.bad(b"{\"pixels\": [1e999" + b", 0" * 783 + b"]}", "application/json", 400, "bad_json")

    def test_string_pixel(self):
        b = self.bad(json.dumps({"pixels": ["0.5"] + [0] * 783}).encode(), "application/json", 400, "bad_input")
        self.assertIn("string", b["error"]["message"])

    def test_out_of_range_pixel(self):
        for v in (1.5, -0.1, 255):
            self.bad(json.dumps({"pixels": [v] + [0] * 783}).encode(), "application/json", 400, "bad_input")

    def test_bad_base64(self):
        self.bad(b"{\"image\": \"not base64 !!\"}", "application/json", 400, "bad_input")

    def test_base64_of_garbage(self):
        self.bad(json.dumps({"image": base64.b64encode(b"hello world").decode()}).encode(),
                 "application/json", 415, "unsupported_media_type")

    def test_multipart_without_image(self):
        body, ct = fx.multipart("file", png(0))
        self.bad(body, ct, 400, "bad_request")

    def test_bad_top_k(self):
        for q in ("?top_k=0", "?top_k=-1", "?top_k=abc", "?top_k=", "?top_k=1.5"):
            self.bad(png(0), "image/png", 400, "bad_parameter", q)

    def test_bad_invert(self):
        self.bad(png(0), "image/png", 400, "bad_parameter", "?invert=maybe")

    def test_bad_target(self):
        for q in ("?target=10", "?target=-1", "?target=Nope", "?target="):
            self.bad(png(0), "image/png", 400, "bad_parameter", q, route="/v1/models/alpha/saliency")

    def test_bad_saliency_options(self):
        for q in ("?format=gif", "?scale=0", "?scale=33", "?scale=x", "?overlay=2"):
            self.bad(png(0), "image/png", 400, "bad_parameter", q, route="/v1/models/alpha/saliency")

    def test_oversize_body(self):
        # Refused from the Content-Length alone, before any of the body is read.
        raw = self.d.raw(b"POST /v1/models/alpha/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                         b"Content-Length: %d\r\n\r\n" % ((1 << 20) + 1))
        self.assertTrue(raw.startswith(b"HTTP/1.1 413"), raw[:100])
        self.assertIn(b'"code":"payload_too_large"', raw)

    def test_oversize_body_expect_continue(self):
        raw = self.d.raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                         b"Content-Length: 50000000\r\nExpect: 100-continue\r\n\r\n")
        self.assertTrue(raw.startswith(b"HTTP/1.1 413"), raw[:100])

    def test_oversize_chunked(self):
        chunk = b"\0" * 65536
        body = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(20)) + b"0\r\n\r\n"
        raw = self.d.raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                         b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body)
        self.assertTrue(raw.startswith(b"HTTP/1.1 413"), raw[:100])

    def test_decompression_bomb(self):
        bomb = fx.png_bomb(10000, 5000)  # 50 megapixels in ~50 KB
        self.assertLess(len(bomb), 1 << 20)
        self.bad(bomb, "image/png", 413, "payload_too_large")


class V2(Served):
    def infer(self, tensor, model="alpha", extra=None):
        body = {"id": "req-1", "inputs": [tensor]}
        body.update(extra or {})
        return self.post("/v2/models/%s/infer" % model, json.dumps(body).encode(), "application/json")

    def assert_v2_error(self, st, b, status):
        self.assertEqual(st, status, b)
        self.assertIsInstance(b["error"], str)
        self.assertTrue(b["error"])

    def test_server_and_health(self):
        st, _, b = self.d.json("GET", "/v2")
        self.assertEqual((st, b["name"]), (200, "loupe"))
        self.assertEqual(self.d.json("GET", "/v2/health/live")[::2], (200, {"live": True}))
        self.assertEqual(self.d.json("GET", "/v2/health/ready")[::2], (200, {"ready": True}))
        self.assertEqual(self.d.json("GET", "/v2/models/alpha/ready")[::2], (200, {"name": "alpha", "ready": True}))

    def test_model_metadata(self):
        st, _, b = self.d.json("GET", "/v2/models/alpha")
        self.assertEqual(st, 200)
        self.assertEqual(b["inputs"][0]["datatype"], "FP32")
        self.assertEqual(b["inputs"][0]["shape"], [-1, 784])
        self.assertEqual(b["outputs"][0]["shape"], [-1, 10])

    def test_infer_agrees_with_v1(self):
        idx = list(range(8))
        refs = []
        for i in idx:
            st, _, b = self.predict(png(i))
            refs.append(b["probabilities"])
        flat = [v / 255.0 for i in idx for v in IMAGES[i].reshape(-1).tolist()]
        nested = [[[[v / 255.0 for v in row] for row in IMAGES[i].tolist()]] for i in idx]
        u8 = [v for i in idx for v in IMAGES[i].reshape(-1).tolist()]
        for tensor in ({"name": "input", "datatype": "FP32", "shape": [8, 784], "data": flat},
                       {"name": "input", "datatype": "FP32", "shape": [8, 1, 28, 28], "data": nested},
                       {"name": "input", "datatype": "UINT8", "shape": [8, 784], "data": u8}):
            st, _, b = self.infer(tensor)
            self.assertEqual(st, 200, b)
            self.assertEqual((b["model_name"], b["id"]), ("alpha", "req-1"))
            out = b["outputs"][0]
            self.assertEqual((out["name"], out["datatype"], out["shape"]), ("probabilities", "FP32", [8, 10]))
            np.testing.assert_allclose(np.array(out["data"]).reshape(8, 10), np.array(refs), atol=1e-6)

    def test_errors_in_v2_shape(self):
        cases = [
            ({"name": "input", "datatype": "FP32", "shape": [1, 783], "data": [0] * 783}, 400),
            ({"name": "input", "datatype": "FP32", "shape": [2, 784], "data": [0] * 784}, 400),
            ({"name": "input", "datatype": "INT64", "shape": [1, 784], "data": [0] * 784}, 400),
            ({"name": "input", "datatype": "UINT8", "shape": [1, 784], "data": [256] + [0] * 783}, 400),
            ({"name": "input", "datatype": "FP32", "shape": [1, 784], "data": ["x"] + [0] * 783}, 400),
            ({"name": "input", "datatype": "FP32", "shape": [0, 784], "data": []}, 400),
        ]
        for tensor, status in cases:
            self.assert_v2_error(*self.infer(tensor)[::2], status)
        self.assert_v2_error(*self.post("/v2/models/alpha/infer", b"[]", "application/json")[::2], 400)
        self.assert_v2_error(*self.post("/v2/models/alpha/infer", b"{", "application/json")[::2], 400)
        self.assert_v2_error(*self.infer({"name": "input", "datatype": "FP32", "shape": [1, 784], "data": [0] * 784},
                                         model="nope")[::2], 404)
        self.assert_v2_error(*self.d.json("GET", "/v2/models/nope")[::2], 404)
        self.assert_v2_error(*self.d.json("GET", "/v2/nothing")[::2], 404)
        self.assert_still_serving()


class Metrics(Served):
    def test_parses(self):
        from prometheus_client.parser import text_string_to_metric_families
        self.predict(png(0))
        self.d.json("GET", "/v1/models/nope")
        # A request is counted when libmicrohttpd reports it complete, just after its answer
        # went out: the next request can come first.
        for _ in range(500):
            st, h, body = self.d.request("GET", "/metrics")
            if b'route="/v1/models/{m}",status="404"' in body:
                break
            time.sleep(0.01)
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/plain"))
        fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
        req = fams["loupe_http_requests"]
        self.assertEqual(req.type, "counter")
        labels = {(s.labels["route"], s.labels["status"]) for s in req.samples if s.name.endswith("_total")}
        self.assertIn(("/v1/models/{m}/predict", "200"), labels)
        self.assertIn(("/v1/models/{m}", "404"), labels)
        self.assertEqual(fams["loupe_http_request_duration_seconds"].type, "histogram")
        inf = fams["loupe_inference_duration_seconds"]
        self.assertEqual(inf.type, "histogram")
        self.assertIn("alpha", {s.labels["model"] for s in inf.samples})
        gauges = {f.name: f.samples[0].value for f in fams.values() if f.type == "gauge"}
        self.assertEqual(gauges["loupe_models_loaded"], 3)
        self.assertGreaterEqual(gauges["loupe_http_requests_in_flight"], 1)  # this request
        self.assertLess(abs(gauges["process_start_time_seconds"] - time.time()), 3600)

    def test_process_metrics(self):
        """The standard process metrics, checked against what /proc says of the daemon's pid."""
        import resource
        from prometheus_client.parser import text_string_to_metric_families
        pid = self.d.proc.pid
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME) + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        for _ in range(3):  # warm the daemon: some CPU time to see
            self.predict(png(0))
        body = self.d.request("GET", "/metrics")[2].decode()
        with open("/proc/%d/status" % pid) as f:
            status = dict(ln.split(":", 1) for ln in f if ":" in ln)
        fds = len(os.listdir("/proc/%d/fd" % pid))
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        fams = {f.name: f for f in text_string_to_metric_families(body)}
        value = {n: fams[n].samples[0].value for n in ("process_resident_memory_bytes", "process_virtual_memory_bytes",
                                                       "process_cpu_seconds", "process_open_fds", "process_max_fds",
                                                       "process_start_time_seconds")}
        self.assertEqual(fams["process_cpu_seconds"].type, "counter")
        rss = int(status["VmRSS"].split()[0]) * 1024
        self.assertLess(abs(value["process_resident_memory_bytes"] - rss), 0.2 * rss)
        self.assertLess(abs(value["process_virtual_memory_bytes"] - int(status["VmSize"].split()[0]) * 1024), 64 << 20)
        self.assertGreater(value["process_cpu_seconds"], 0)
        self.assertLessEqual(value["process_cpu_seconds"], cpu + 0.02)
        self.assertLess(abs(value["process_open_fds"] - fds), 4)  # connections come and go
        self.assertEqual(value["process_max_fds"], float(resource.prlimit(pid, resource.RLIMIT_NOFILE)[0]))
        self.assertLess(abs(value["process_start_time_seconds"] - start), 2)


class Probe(Served):
    """`loupe probe URL`: a health check without curl. Exit 0 on 2xx, 1 otherwise, 2 on a bad command line."""

    def probe(self, *args):
        p = subprocess.run([LOUPE, "probe", *args], capture_output=True, text=True, timeout=30)
        return p.returncode, p.stdout.strip(), p.stderr.strip()

    def test_statuses(self):
        base = "http://127.0.0.1:%d" % self.d.port
        self.assertEqual(self.probe(base + "/healthz"), (0, "HTTP/1.1 200 OK", ""))
        self.assertEqual(self.probe("http://localhost:%d/readyz" % self.d.port)[:2], (0, "HTTP/1.1 200 OK"))
        self.assertEqual(self.probe(base + "/nope")[:2], (1, "HTTP/1.1 404 Not Found"))
        self.assertEqual(self.probe(base + "/predict")[:2], (1, "HTTP/1.1 405 Method Not Allowed"))

    def test_no_server(self):
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        rc, out, err = self.probe("--timeout", "2", "http://127.0.0.1:%d/healthz" % port)
        self.assertEqual((rc, out), (1, ""))
        self.assertIn("cannot connect to 127.0.0.1:%d: Connection refused" % port, err)

    def test_silent_server_times_out(self):
        with socket.socket() as s:  # accepts (backlog) but never answers
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            t0 = time.time()
            rc, _, err = self.probe("--timeout", "1", "http://127.0.0.1:%d/" % s.getsockname()[1])
        self.assertEqual(rc, 1)
        self.assertIn("no answer", err)
        self.assertLess(time.time() - t0, 10)

    def test_bad_command_lines(self):
        for args, why in ((["ftp://x/"], "is not an http:// URL"), (["https://x/"], "https is not supported"),
                          (["http://:80/"], "no host"), (["http://x:8o/"], "bad port"),
                          (["--timeout", "0", "http://x/"], "--timeout must be"), ([], "usage: loupe probe")):
            rc, _, err = self.probe(*args)
            self.assertEqual(rc, 2, args)
            self.assertIn(why, err, args)


class Docs(Served):
    """Every curl line of docs/api.md, as pasted (port and model name substituted)."""
    env = {"LOUPE_ADMIN_TOKEN": "docs-token"}

    @classmethod
    def setUpClass(cls):
        import tempfile
        cls.reports = tempfile.mkdtemp(prefix="loupe-docs-reports-")
        fx.make_report(os.path.join(cls.reports, "seed-reproduction-quick"))
        cls.args = Served.args + ("--reports", cls.reports)
        super().setUpClass()

    def test_examples(self):
        import re
        import subprocess
        import tempfile
        with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "api.md")) as f:
            blocks = re.findall(r"```sh\n(.*?)```", f.read(), re.S)
        work = tempfile.mkdtemp(prefix="loupe-docs-")
        env = dict(os.environ, LOUPE_ADMIN_TOKEN="docs-token", PATH="/usr/bin:/bin")
        self.assertIn("python3 - <<'EOF'", blocks[0])
        subprocess.run(["bash", "-c", blocks[0]], cwd=work, env=env, check=True)
        # The CNN examples (model vgg16-w25) run in test_cnn.py's Docs, against a VGG.
        lines = [ln for b in blocks[1:] for ln in b.splitlines() if ln.startswith("curl ") and "vgg16-w25" not in ln]
        self.assertGreater(len(lines), 20)
        for ln in lines:
            # -w appends the status on its own line, after the body (or after -o's file is written).
            cmd = ln.replace("localhost:8080", "127.0.0.1:%d" % self.d.port).replace("mlp-relu", "alpha")
            r = subprocess.run(["bash", "-c", cmd + " -w '\\n%{http_code}'"], cwd=work, env=env, capture_output=True)
            self.assertEqual(r.returncode, 0, (ln, r.stderr))
            out, _, status = r.stdout.decode(errors="replace").rpartition("\n")
            with self.subTest(line=ln):
                self.check_example(ln.replace("mlp-relu", "alpha"), int(status), out, work)

    def check_example(self, ln, status, out, work):
        """What the answer to one curl line of docs/api.md must hold: its status and content."""
        def doc(want_status=200):
            self.assertEqual(status, want_status, out[:300])
            return json.loads(out)

        def png_size(name):
            with open(os.path.join(work, name), "rb") as f:
                data = f.read()
            self.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n")
            self.assertEqual(data[12:16], b"IHDR")
            return data, tuple(int.from_bytes(data[i:i + 4], "big") for i in (16, 20))

        def error(want_status, code):
            b = doc(want_status)
            self.assertEqual(sorted(b), ["error"])
            self.assertEqual(b["error"]["code"], code)
            self.assertIsInstance(b["error"]["message"], str)
            return b["error"]["message"]

        def with_headers(want_status):
            head, _, body = out.replace("\r\n", "\n").partition("\n\n")
            self.assertTrue(head.startswith("HTTP/1.1 %d " % want_status), head)
            self.assertEqual(status, want_status)
            return {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in head.split("\n")[1:])}, body

        def prediction(model="alpha", top_k=5, atol=0.0):
            """The answer for shoe.png (the first test image): the one for png(0) from the same model."""
            b = doc()
            st, _, ref = self.predict(png(0), model=model)
            self.assertEqual(st, 200, ref)
            self.assertEqual(sorted(b), sorted(ref))
            self.assertEqual((b["model"], b["index"], b["class"], b["inverted"]),
                             (model, ref["index"], fx.CLASSES[ref["index"]], False))
            self.assertEqual(len(b["top_k"]), top_k)
            self.assertEqual([e["index"] for e in b["top_k"]], [e["index"] for e in ref["top_k"]][:top_k])
            np.testing.assert_allclose(b["probabilities"], ref["probabilities"], rtol=0, atol=atol)
            self.assertEqual(b["probability"], b["probabilities"][b["index"]])

        models = ["alpha", "beta", "zero"]
        if "v1/models/alpha/predict" in ln and "pixels.json" in ln:
            prediction(atol=2e-6)  # pixels v/255 in JSON: the float32 the PNG path makes, to within a rounding
        elif "v1/models/alpha/predict" in ln:
            prediction(top_k=3 if "top_k=3" in ln else 5)
        elif ln.endswith("localhost:8080/predict") and "text/plain" in ln:
            self.assertIn("text/plain", error(415, "unsupported_media_type"))
        elif ln.endswith("localhost:8080/predict"):
            prediction(model=self.d.json("GET", "/v1/models")[2]["default"])
        elif "saliency?format=json" in ln:
            b = doc()
            self.assertEqual(b["target"], {"index": 9, "class": "Ankle boot"})
            self.assertEqual((b["model"], b["width"], b["height"], b["inverted"]), ("alpha", 28, 28, False))
            self.assertEqual(b["prediction"]["index"], self.baseline["index"])
            sal = np.array(b["saliency"])
            self.assertEqual(sal.shape, (28, 28))
            self.assertTrue(0 <= sal.min() and sal.max() == 1.0, (sal.min(), sal.max()))
            self.assertGreater(b["gradient_at_top"], 0)
        elif "/explain?" in ln and "format=json" in ln:
            b = doc()
            self.assertEqual((b["model"], b["method"], b["params"]), ("alpha", "integrated_gradients",
                                                                      {"steps": 64, "baseline": "black"}))
            self.assertEqual(b["target"]["index"], self.baseline["index"])
            a, mp = np.array(b["attribution"]), np.array(b["map"])
            self.assertEqual((a.shape, mp.shape), ((1, 28, 28), (28, 28)))
            self.assertTrue(0 <= mp.min() and mp.max() == 1.0, (mp.min(), mp.max()))
            # Completeness: the attributions add up to score(x) - score(x0), up to the 64-step sum's error.
            self.assertAlmostEqual(a.sum() - b["convergence_delta"], b["score"] - b["baseline_score"], places=3)
            self.assertLess(abs(b["convergence_delta"]), 0.1 * abs(b["score"] - b["baseline_score"]))
        elif "/explain?" in ln:
            name = ln.split(" -o ")[1].split()[0]
            self.assertEqual((status, out), (200, ""))
            self.assertEqual(png_size(name)[1], (280, 280))  # 28 x --scale 10
        elif "/visualize?" in ln and "format=json" in ln:
            b = doc()
            self.assertEqual((b["model"], b["class"], b["start"]), ("alpha", {"index": 7, "class": "Sneaker"}, "image"))
            self.assertEqual(([f["iteration"] for f in b["frames"]], len(b["score"])), ([5, 10], 11))
            self.assertGreater(b["score"][-1], b["score"][0])  # the image was optimised to raise the class's score
        elif "/visualize?" in ln:
            name = ln.split(" -o ")[1].split()[0]
            self.assertEqual((status, out), (200, ""))
            self.assertEqual(png_size(name)[1], (3 * 28 * 4, 28 * 4))  # 30 / 10 frames side by side, --scale 4
        elif "saliency" in ln:
            name = ln.split(" -o ")[1].split()[0]
            self.assertEqual((status, out), (200, ""))
            self.assertEqual(png_size(name)[1], (280, 280))  # 28 x --scale 10
        elif "/v1/samples?" in ln:
            from PIL import Image  # noqa: E402 (Pillow: only this example decodes PNGs)
            b = doc()
            self.assertEqual((b["seed"], b["class"], b["count"]), (7, {"index": 8, "name": "Bag"}, 2))
            self.assertEqual([s["index"] for s in b["samples"]], [4656, 7281])  # as the example says
            for s in b["samples"]:
                self.assertEqual((s["label"], s["class"], int(LABELS[s["index"]])), (8, "Bag", 8))
                np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(s["image"])))),
                                              IMAGES[s["index"]])
        elif "/v1/models/alpha/mistakes?" in ln:
            b = doc()
            self.assertEqual((b["model"], b["total"], b["count"], len(b["mistakes"])), ("alpha", 10000, 3, 3))
            self.assertEqual(b["accuracy"], (b["total"] - b["wrong"]) / b["total"])
            for m in b["mistakes"]:
                self.assertEqual((m["label"], m["class"]), (int(LABELS[m["index"]]), fx.CLASSES[m["label"]]))
                self.assertNotEqual(m["predicted"], m["label"])
                self.assertEqual(m["predicted_class"], fx.CLASSES[m["predicted"]])
        elif "/v1/admin/reload" in ln:
            b = doc()
            self.assertEqual(sorted(b["loaded"]), models)
            self.assertEqual([s["name"] for s in b["skipped"]], ["broken"])
            self.assertIn(b["default"], models)
        elif ln.endswith("/v1/reports"):
            b = doc()
            self.assertEqual([r["name"] for r in b["reports"]], ["seed-reproduction-quick"])
            self.assertEqual(b["reports"][0]["figures"], ["mlp_loss_relu.png"])  # missing.png is not listed
            self.assertEqual(b["skipped"], [])
        elif ln.endswith("/figures/missing.png"):
            self.assertIn("missing.png", error(404, "not_found"))
        elif "/figures/mlp_loss_relu.png" in ln:
            self.assertEqual((status, out), (200, ""))
            data, size = png_size("mlp_loss_relu.png")
            with open(os.path.join(self.reports, "seed-reproduction-quick", "figures", "mlp_loss_relu.png"), "rb") as f:
                self.assertEqual(data, f.read())
        elif ln.endswith("/v1/reports/seed-reproduction-quick"):
            b = doc()
            with open(os.path.join(self.reports, "seed-reproduction-quick", "report.json")) as f:
                rep = json.load(f)
            self.assertEqual({k: v for k, v in b.items() if k != "markdown"}, rep)
            self.assertIn("KL(y ‖ p)", b["markdown"])
        elif ln.endswith("/v2"):
            b = doc()
            self.assertEqual((b["name"], b["extensions"]), ("loupe", []))
            self.assertRegex(b["version"], r"^\d+\.\d+\.\d+$")
        elif ln.endswith("/v2/health/live"):
            self.assertEqual(doc(), {"live": True})
        elif ln.endswith("/v2/health/ready"):
            self.assertEqual(doc(), {"ready": True})
        elif ln.endswith("/v2/models/alpha/ready"):
            self.assertEqual(doc(), {"name": "alpha", "ready": True})
        elif ln.endswith("/v2/models/alpha"):
            b = doc()
            self.assertEqual((b["name"], b["platform"]), ("alpha", "loupe_mlp"))
            self.assertEqual(b["inputs"], [{"name": "input", "datatype": "FP32", "shape": [-1, 784]}])
            self.assertEqual(b["outputs"], [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}])
        elif "@infer.json" in ln:
            b = doc()
            self.assertEqual((b["model_name"], b["id"], len(b["outputs"])), ("alpha", "1", 1))
            o = b["outputs"][0]
            self.assertEqual((o["name"], o["datatype"], o["shape"]), ("probabilities", "FP32", [1, 10]))
            np.testing.assert_allclose(o["data"], self.baseline["probabilities"], rtol=0, atol=2e-6)
        elif "/v2/models/alpha/infer" in ln:
            self.assertEqual(doc(400), {"error": "\"data\" has 1 values, the shape says 784"})  # V2's error: a string
        elif "-X DELETE" in ln:
            h, body = with_headers(405)
            self.assertEqual(h["allow"], "GET, HEAD")
            self.assertEqual(json.loads(body)["error"]["code"], "method_not_allowed")
        elif "-X OPTIONS" in ln:
            h, body = with_headers(204)
            self.assertEqual((h["allow"], body), ("GET, HEAD, POST, OPTIONS", ""))
            self.assertNotIn("access-control-allow-origin", h)  # this daemon has no --cors-origin
        elif ln.endswith("/healthz"):
            self.assertEqual(doc(), {"status": "ok"})
        elif ln.endswith("/v1/training"):
            self.assertEqual(doc(), {"trainings": []})  # no trainer writes a status file into this store
        elif ln.endswith("/openapi.json"):
            with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "openapi.json"), encoding="utf-8") as f:
                self.assertEqual(doc(), json.load(f))
        elif ln.endswith("/readyz"):
            b = doc()
            self.assertEqual((b["status"], b["models"]), ("ready", 3))
        elif ln.endswith("/metrics"):
            self.assertEqual(status, 200)
            self.assertRegex(out, r"(?m)^loupe_models_loaded 3$")
            self.assertRegex(out, r"(?m)^# TYPE loupe_http_requests_total counter$")
        elif ln.endswith("/v1/models"):
            b = doc()
            self.assertEqual([m["name"] for m in b["models"]], models)
            self.assertIn(b["default"], models)
            for m in b["models"]:
                self.assertEqual((m["kind"], m["classes"]), ("mlp", fx.CLASSES))
        elif ln.endswith("/v1/models/alpha"):
            b = doc()
            self.assertEqual(b["manifest"]["name"], "alpha")
            self.assertEqual(b["manifest"]["mlp"]["sizes"], [784, 128, 96, 10])
            self.assertIsInstance(b["metrics"]["test_accuracy"], float)
        elif ln.endswith("localhost:8080/"):
            self.assertEqual(status, 200)
            self.assertIn('<script src="app.js"', out)
        else:
            self.fail("a curl line of docs/api.md this test does not know: add what its answer must hold")


class Accuracy(Served):
    """The test set sent as PNG gives exactly the trainer's test accuracy (LOUPE_QUICK: 500 images agree with V2)."""

    def test_test_set_as_png(self):
        with open(os.path.join(STORE, "alpha", "metrics.json")) as f:
            want = json.load(f)["test_accuracy"]
        n = 500 if QUICK else len(IMAGES)
        workers = 4
        preds = [None] * n

        def work(w):
            c = self.d.conn()
            for i in range(w, n, workers):
                st, _, b = self.predict_on(c, png(i))
                fx.require(st == 200, b)
                preds[i] = b["index"]
            c.close()

        t0 = time.time()
        with cf.ThreadPoolExecutor(workers) as ex:
            list(ex.map(work, range(workers)))
        print("\n%d PNG predictions in %.1fs" % (n, time.time() - t0), file=sys.stderr)
        correct = sum(int(p == l) for p, l in zip(preds, LABELS[:n]))
        if not QUICK:
            self.assertEqual(correct / n, want)
        else:
            v2 = []
            for i in range(0, n, 100):  # batches that fit --max-body
                x = IMAGES[i:i + 100].reshape(-1).tolist()
                st, _, b = self.post("/v2/models/alpha/infer", json.dumps(
                    {"inputs": [{"name": "input", "datatype": "UINT8", "shape": [len(x) // 784, 784],
                                 "data": x}]}).encode(), "application/json")
                self.assertEqual(st, 200, b)
                v2 += np.array(b["outputs"][0]["data"]).reshape(-1, 10).argmax(1).tolist()
            self.assertEqual(preds, v2)

    def predict_on(self, c, body):
        return self.post("/v1/models/alpha/predict", body, "image/png", conn=c)


class Drain(unittest.TestCase):
    def test_sigterm_loses_no_request_in_flight(self):
        d = fx.Daemon(LOUPE, STORE, "--drain-grace", "1", "--threads", "4")
        body = png(0)
        st, _, ref = d.json("POST", "/v1/models/alpha/predict", body, {"Content-Type": "image/png"})
        self.assertEqual(st, 200)
        # Requests in flight: headers and half the body sent, the rest after the door has closed.
        socks = []
        for _ in range(6):
            s = socket.create_connection(("127.0.0.1", d.port), timeout=30)
            s.sendall(b"POST /v1/models/alpha/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body[:len(body) // 2])
            socks.append(s)
        # And steady load on keep-alive connections.
        stop, results = threading.Event(), []

        def load():
            c = d.conn()
            while not stop.is_set():
                try:
                    st, _, b = d.json("POST", "/v1/models/alpha/predict", body, {"Content-Type": "image/png"}, conn=c)
                except (ConnectionError, OSError, Exception) as e:  # connection refused once the door closes
                    results.append(("conn", repr(e)))
                    c.close()
                    c = d.conn()
                    time.sleep(0.01)
                    continue
                results.append((st, b.get("probabilities") if isinstance(b, dict) else b))
            c.close()

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        t_sig = time.time()
        d.signal(signal.SIGTERM)
        time.sleep(0.1)
        st, _, b = d.json("GET", "/readyz")
        self.assertEqual(st, 503, b)
        # Still served during the grace period.
        st, _, b = d.json("POST", "/v1/models/alpha/predict", body, {"Content-Type": "image/png"})
        self.assertEqual(st, 200, b)
        time.sleep(max(0, 1.5 - (time.time() - t_sig)))
        stop.set()
        for t in threads:
            t.join()
        # The door is closed now...
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", d.port), timeout=2).close()
        # ...and the requests in flight still finish.
        for s in socks:
            s.sendall(body[len(body) // 2:])
            raw = b""
            while b"\r\n\r\n" not in raw or len(raw.split(b"\r\n\r\n", 1)[1]) < 10:
                chunk = s.recv(65536)
                if not chunk:
                    break
                raw += chunk
            self.assertTrue(raw.startswith(b"HTTP/1.1 200"), raw[:200])
            while True:
                head, rest = raw.split(b"\r\n\r\n", 1)
                clen = int([ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")][0])
                if len(rest) >= clen:
                    break
                raw += s.recv(65536)
            # Concurrent requests may share a batched pass: the same answer up to its rounding.
            np.testing.assert_allclose(json.loads(rest[:clen])["probabilities"], ref["probabilities"], atol=1e-5, rtol=0)
            s.close()
        rc = d.proc.wait(30)
        d.log.close()
        self.assertEqual(rc, 0, d.read_log())
        ok = [r for r in results if r[0] == 200]
        self.assertGreater(len(ok), 10)
        for r in results:
            if r[0] != "conn":
                self.assertEqual(r[0], 200, r)
                np.testing.assert_allclose(r[1], ref["probabilities"], atol=1e-5, rtol=0)
        # Every response that started was completed: nothing but 200s and refused connections.
        self.assertIn("stopped", d.read_log())


class AccessLog(unittest.TestCase):
    """The access log cannot be forged by what a client sends, in text or JSON lines."""

    def send(self, d, request):
        with socket.create_connection(("127.0.0.1", d.port), timeout=10) as sk:
            sk.sendall(request)
            while sk.recv(65536):
                pass

    def wait_log(self, d, needle):
        for _ in range(100):
            text = d.read_log()
            if needle in text:
                return text
            time.sleep(0.02)
        self.fail(f"{needle!r} never logged:\n{d.read_log()}")

    def test_text_lines_escape_control_bytes(self):
        d = fx.Daemon(LOUPE, STORE, "--drain-grace", "0")
        try:
            self.send(d, b"GET /a%0aFAKE%20200%0d%1b[31m%ff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            text = self.wait_log(d, "/a\\x0aFAKE")
            self.assertFalse([ln for ln in text.splitlines() if ln.startswith("FAKE")], text)
            line = next(ln for ln in text.splitlines() if "/a\\x0aFAKE" in ln)
            self.assertIn("/a\\x0aFAKE 200\\x0d\\x1b[31m\\xff 404 ", line)
        finally:
            self.assertEqual(d.stop(), 0)

    def test_json_lines_parse_whatever_the_client_sent(self):
        d = fx.Daemon(LOUPE, STORE, "--drain-grace", "0", "--log-format", "json")
        try:
            self.send(d, b'GET /b%0a%22FAKE%5c%ff HTTP/1.1\r\nHost: x\r\nX-Request-ID: id-"q"\r\n'
                         b"Connection: close\r\n\r\n")
            st, _, _ = d.json("GET", "/healthz")
            self.assertEqual(st, 200)
            self.wait_log(d, '"path":"/b')
            text = self.wait_log(d, '"path":"/healthz"')  # logged once the answer has gone out
            lines = [json.loads(ln) for ln in text.splitlines() if ln.strip()]  # every line is JSON
            self.assertTrue(all("time" in o for o in lines))
            self.assertTrue(any("msg" in o and "listening on" in o["msg"] for o in lines))
            hit = next(o for o in lines if o.get("path", "").startswith("/b"))
            self.assertEqual(hit["path"], '/b\n"FAKE\\\u00ff')
            self.assertEqual((hit["method"], hit["status"], hit["aborted"]), ("GET", 404, False))
            self.assertIsInstance(hit["ms"], float)
            self.assertTrue(any(o.get("path") == "/healthz" and o["status"] == 200 for o in lines))
        finally:
            self.assertEqual(d.stop(), 0)

    def test_bad_log_format_is_refused(self):
        p = subprocess.run([LOUPE, "serve", "--log-format", "xml"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--log-format is text or json, not 'xml'", p.stderr)


class Signals(unittest.TestCase):
    def test_every_thread_blocks_or_passes_on_the_drain_signals(self):
        """A thread a library started before main (OpenBLAS's pool) neither blocks
        SIGTERM nor has a handler for it: while the signal thread reloaded, a
        SIGTERM delivered there killed the daemon. Every thread now blocks
        SIGTERM, SIGINT and SIGHUP or catches them (and passes them on)."""
        d = fx.Daemon(LOUPE, STORE, "--drain-grace", "0")
        try:
            bits = (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGHUP - 1))
            tasks = os.listdir(f"/proc/{d.proc.pid}/task")
            self.assertGreater(len(tasks), 2)
            for t in tasks:
                with open(f"/proc/{d.proc.pid}/task/{t}/status") as f:
                    st = dict(ln.split(":", 1) for ln in f if ":" in ln)
                blk, cgt = int(st["SigBlk"], 16), int(st["SigCgt"], 16)
                self.assertEqual((blk | cgt) & bits, bits, f"thread {t} ({st['Name'].strip()}): SigBlk {blk:x} SigCgt {cgt:x}")
        finally:
            self.assertEqual(d.stop(), 0)

    def test_sigterm_during_a_reload_drains(self):
        """SIGTERM right after SIGHUP, while the signal thread reloads: the
        daemon drains and exits 0 (it was killed by the signal before)."""
        for _ in range(5):
            d = fx.Daemon(LOUPE, STORE, "--drain-grace", "0")
            d.signal(signal.SIGHUP)
            self.assertEqual(d.stop(), 0)
            self.assertIn("draining", d.read_log())


class Reload(unittest.TestCase):
    def test_reload_under_load_fails_none(self):
        d = fx.Daemon(LOUPE, STORE, "--threads", "4", "--drain-grace", "0", env={"LOUPE_ADMIN_TOKEN": "s3cret"})
        try:
            body = png(1)
            st, _, ref = d.json("POST", "/v1/models/alpha/predict", body, {"Content-Type": "image/png"})
            st, _, ref_b = d.json("POST", "/v1/models/beta/predict", body, {"Content-Type": "image/png"})
            # Token checks.
            st, h, b = d.json("POST", "/v1/admin/reload")
            self.assertEqual(st, 401, b)
            self.assertEqual(h.get("www-authenticate"), "Bearer")
            st, _, b = d.json("POST", "/v1/admin/reload", headers={"Authorization": "Bearer wrong"})
            self.assertEqual(st, 401, b)

            stop, failures, count = threading.Event(), [], [0]

            def load(model, want):
                c = d.conn()
                while not stop.is_set():
                    try:
                        st, _, b = d.json("POST", "/v1/models/%s/predict" % model, body,
                                          {"Content-Type": "image/png"}, conn=c)
                        # Concurrent requests may share a batched pass: equal up to its rounding.
                        if st != 200 or np.max(np.abs(np.array(b["probabilities"]) - want)) > 1e-5:
                            failures.append((st, b))
                        count[0] += 1
                    except Exception as e:  # noqa: BLE001 -- any failure counts
                        failures.append(repr(e))
                        c.close()
                        c = d.conn()
                c.close()

            threads = [threading.Thread(target=load, args=(m, w)) for m, w in
                       (("alpha", ref["probabilities"]), ("beta", ref_b["probabilities"]), ("alpha", ref["probabilities"]))]
            for t in threads:
                t.start()
            for i in range(10):
                st, _, b = d.json("POST", "/v1/admin/reload", headers={"Authorization": "Bearer s3cret"})
                self.assertEqual(st, 200, b)
                self.assertEqual(sorted(b["loaded"]), ["alpha", "beta", "zero"])
                self.assertEqual([s["name"] for s in b["skipped"]], ["broken"])
                d.signal(signal.SIGHUP)
                time.sleep(0.05)
            stop.set()
            for t in threads:
                t.join()
            self.assertEqual(failures, [])
            self.assertGreater(count[0], 20)
            self.assertGreaterEqual(d.read_log().count("reloading the model store (SIGHUP)"), 1)
        finally:
            self.assertEqual(d.stop(), 0)


class ReloadFaults(unittest.TestCase):
    """One reload that meets every kind of folder at once: added, changed,
    corrupt (half-written weights, truncated model.json), turned into a file,
    gone between the scan and its load (a dangling link: listed, then not
    found), removed, broken from the start, hidden. The failed ones keep their previous
    version; every other folder updates; the answer, the log and /metrics say
    which is which."""

    TOKEN = {"Authorization": "Bearer s3cret"}

    def setUp(self):
        import shutil
        import tempfile
        self.store = tempfile.mkdtemp(prefix="loupe-reload-faults-")
        self.addCleanup(shutil.rmtree, self.store, True)
        self.copy = lambda src, dst: shutil.copytree(os.path.join(STORE, src), os.path.join(self.store, dst))
        for src, dst in (("alpha", "keep"), ("beta", "change"), ("beta", "corrupt"), ("beta", "halfjson"),
                         ("beta", "tofile"), ("beta", "vanish"), ("zero", "gone"), ("alpha", ".hidden.tmp-1")):
            self.copy(src, dst)

    def reload(self, d):
        st, _, b = d.json("POST", "/v1/admin/reload", headers=self.TOKEN)
        self.assertEqual(st, 200, b)
        return b

    def probs(self, d, model):
        st, _, b = d.json("POST", "/v1/models/%s/predict" % model, png(3), {"Content-Type": "image/png"})
        self.assertEqual(st, 200, (model, b))
        return b["probabilities"]

    def sizes(self, d):
        st, _, b = d.json("GET", "/v1/models")
        self.assertEqual(st, 200, b)
        return {m["name"]: m["mlp"]["sizes"] for m in b["models"]}

    def metrics(self, d):
        from prometheus_client.parser import text_string_to_metric_families
        st, _, body = d.request("GET", "/metrics")
        self.assertEqual(st, 200)
        out = {}
        for fam in text_string_to_metric_families(body.decode()):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def test_failed_folders_keep_their_version_the_others_update(self):
        import shutil
        def join(*parts):
            return os.path.join(self.store, *parts)
        alpha_sizes, beta_sizes = [784, 128, 96, 10], [784, 32, 10]
        d = fx.Daemon(LOUPE, self.store, "--drain-grace", "0", env={"LOUPE_ADMIN_TOKEN": "s3cret"})
        try:
            before = self.sizes(d)
            self.assertEqual(before, {"keep": alpha_sizes, "change": beta_sizes, "corrupt": beta_sizes,
                                      "halfjson": beta_sizes, "tofile": beta_sizes, "vanish": beta_sizes,
                                      "gone": [784, 10]})
            beta, alpha = self.probs(d, "corrupt"), self.probs(d, "keep")
            self.assertNotEqual(beta, alpha)
            m = self.metrics(d)
            self.assertEqual(m[("loupe_reload_last_success", ())], 1)
            self.assertEqual(m[("loupe_reload_failed_models", ())], 0)

            # Everything at once, then one reload.
            shutil.rmtree(join("change"))
            self.copy("alpha", "change")                                  # changed: a new version
            w = join("corrupt", "weights.safetensors")
            os.truncate(w, os.path.getsize(w) // 2)                       # half-written weights
            with open(join("halfjson", "model.json"), "r+") as f:         # half-written manifest
                f.truncate(40)
            shutil.rmtree(join("tofile"))
            with open(join("tofile"), "w") as f:                          # no longer a folder
                f.write("not a model")
            shutil.rmtree(join("vanish"))
            os.symlink(join("nowhere"), join("vanish"))                   # listed, then not found
            shutil.rmtree(join("gone"))                                   # removed
            self.copy("beta", "new")                                      # added
            os.makedirs(join("newbroken"))                                # added, broken: never served
            with open(join("newbroken", "model.json"), "w") as f:
                f.write("{ this is not json")
            b = self.reload(d)

            self.assertIs(b["ok"], False)
            self.assertEqual(sorted(b["loaded"]), ["change", "keep", "new"])
            skipped = {s["name"]: s for s in b["skipped"]}
            self.assertEqual({n: s["kept"] for n, s in skipped.items()},
                             {"corrupt": True, "halfjson": True, "tofile": True, "vanish": True, "newbroken": False})
            self.assertIn("weights.safetensors", skipped["corrupt"]["error"])
            self.assertIn("model.json", skipped["halfjson"]["error"])
            self.assertIn("no longer a folder", skipped["tofile"]["error"])
            self.assertIn("No such file or directory", skipped["vanish"]["error"])
            self.assertIn("model.json", skipped["newbroken"]["error"])
            self.assertEqual(b["removed"], ["gone"])
            self.assertEqual(b["models"], ["change", "corrupt", "halfjson", "keep", "new", "tofile", "vanish"])

            # What is served: the kept ones as before, the changed one anew, the added one, not the removed one.
            self.assertEqual(self.sizes(d), {"keep": alpha_sizes, "change": alpha_sizes, "corrupt": beta_sizes,
                                             "halfjson": beta_sizes, "tofile": beta_sizes, "vanish": beta_sizes,
                                             "new": beta_sizes})
            for name, want in (("keep", alpha), ("change", alpha), ("corrupt", beta), ("halfjson", beta),
                               ("tofile", beta), ("vanish", beta), ("new", beta)):
                np.testing.assert_allclose(self.probs(d, name), want, rtol=0, atol=1e-5, err_msg=name)
            for name in ("gone", "newbroken", ".hidden.tmp-1"):
                st, _, _ = d.json("GET", "/v1/models/" + name)
                self.assertEqual(st, 404, name)

            log = d.read_log()
            self.assertIn("model corrupt: skipped: weights.safetensors", log)
            self.assertIn("the version loaded before keeps serving", log)
            self.assertIn("model gone: removed", log)
            self.assertNotIn("model .hidden", log)

            m = self.metrics(d)
            self.assertEqual(m[("loupe_reload_last_success", ())], 0)
            self.assertEqual(m[("loupe_reload_failed_models", ())], 5)
            for name in ("corrupt", "halfjson", "tofile", "vanish", "newbroken"):
                self.assertEqual(m[("loupe_reload_failures_total", (("model", name),))], 1, name)
            self.assertNotIn(("loupe_reload_failures_total", (("model", "keep"),)), m)
            self.assertEqual(m[("loupe_reloads_total", (("result", "ok"),))], 1)
            self.assertEqual(m[("loupe_models_loaded", ())], 7)

            # Repaired: the next reload loads them afresh and says all is well.
            shutil.rmtree(join("corrupt"))
            self.copy("alpha", "corrupt")
            shutil.rmtree(join("halfjson"))
            shutil.rmtree(join("newbroken"))
            os.remove(join("tofile"))
            os.remove(join("vanish"))
            b = self.reload(d)
            self.assertIs(b["ok"], True)
            self.assertEqual(b["skipped"], [])
            self.assertEqual(sorted(b["removed"]), ["halfjson", "tofile", "vanish"])
            self.assertEqual(b["models"], ["change", "corrupt", "keep", "new"])
            self.assertEqual(self.sizes(d)["corrupt"], alpha_sizes)
            np.testing.assert_allclose(self.probs(d, "corrupt"), alpha, rtol=0, atol=1e-5)
            m = self.metrics(d)
            self.assertEqual(m[("loupe_reload_last_success", ())], 1)
            self.assertEqual(m[("loupe_reload_failed_models", ())], 0)
            self.assertEqual(m[("loupe_reload_failures_total", (("model", "corrupt"),))], 1)

            # SIGHUP takes the same path.
            w = join("corrupt", "weights.safetensors")
            os.truncate(w, 100)
            d.signal(signal.SIGHUP)
            deadline = time.time() + 30
            while time.time() < deadline and \
                    self.metrics(d).get(("loupe_reload_failures_total", (("model", "corrupt"),))) != 2:
                time.sleep(0.05)
            self.assertEqual(self.metrics(d)[("loupe_reload_failures_total", (("model", "corrupt"),))], 2)
            np.testing.assert_allclose(self.probs(d, "corrupt"), alpha, rtol=0, atol=1e-5)
        finally:
            self.assertEqual(d.stop(), 0)

if __name__ == "__main__":
    if sys.argv[1:2] == ["--make-store"]:
        fx.make_store(LOUPE, STORE)
        sys.exit(0)
    unittest.main(verbosity=2)
