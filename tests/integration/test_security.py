"""What hostile or unlucky clients find: the HTTP layer's limits, TLS, the API token, file swaps.

    LOUPE_BIN=build/cli/loupe LOUPE_STORE=/tmp/store /usr/bin/python3 test_security.py Limits Tls ApiToken Files

Each group starts its own daemons on the store test_server.py --make-store writes.
"""
import http.client
import json
import os
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loupe_fixture as fx  # noqa: E402

LOUPE = os.environ.get("LOUPE_BIN", "build/cli/loupe")
STORE = os.environ.get("LOUPE_STORE", "/tmp/loupe-test-store")
IMAGES, LABELS = fx.test_set()
PNG = fx.png_gray(IMAGES[0])


def metric(d, name, conn=None):
    """The value of one sample of /metrics, e.g. 'loupe_refused_total{reason="per_ip"}'
    (asked on conn, a keep-alive connection, when given)."""
    st, _, body = d.request("GET", "/metrics", conn=conn)
    if st != 200:
        raise AssertionError("/metrics answered %d" % st)
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError("no sample %s in /metrics" % name)


def wait_for(what, want, seconds=10):
    """Poll what() until it returns want (the machine may be loaded); returns the last value."""
    t0 = time.time()
    got = what()
    while got != want and time.time() - t0 < seconds:
        time.sleep(0.05)
        got = what()
    return got


def closed_within(sock, seconds, trickle=None):
    """Seconds until the peer closes sock (recv gives EOF, or a send fails), sending
    trickle one byte at a time every 0.25 s meanwhile; None when still open after `seconds`."""
    t0 = time.time()
    i = 0
    sock.settimeout(0.25)
    while time.time() - t0 < seconds:
        try:
            if trickle is not None:
                sock.sendall(trickle[i % len(trickle):i % len(trickle) + 1])
                i += 1
            data = sock.recv(65536)
            if not data:
                return time.time() - t0
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return time.time() - t0
    return None


def is_asan(binary):
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    return "libasan" in out


class Limits(unittest.TestCase):
    """--request-timeout, --max-conn-per-ip, --body-budget, and V2's shape against its data."""

    def test_slow_headers_are_cut_at_the_request_deadline(self):
        """A byte of headers every 0.25 s never trips the 30 s idle timeout; the deadline cuts it."""
        d = fx.Daemon(LOUPE, STORE, "--drain-grace", "0", "--timeout", "30", "--request-timeout", "2")
        try:
            with socket.create_connection(("127.0.0.1", d.port)) as s:
                took = closed_within(s, 8, trickle=b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 1000)
            self.assertIsNotNone(took, "a slowloris client kept its connection for 8 s")
            self.assertGreater(took, 1.5)
            self.assertEqual(metric(d, 'loupe_refused_total{reason="request_timeout"}'), 1)
            self.assertIn("--request-timeout 2s", d.read_log())
            self.assertEqual(d.request("GET", "/healthz")[0], 200)
        finally:
            self.assertEqual(d.stop(), 0)

    def test_slow_body_is_cut_at_the_request_deadline(self):
        d = fx.Daemon(LOUPE, STORE, "--drain-grace", "0", "--timeout", "30", "--request-timeout", "2")
        try:
            with socket.create_connection(("127.0.0.1", d.port)) as s:
                s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                          b"Content-Length: 100000\r\n\r\n")
                took = closed_within(s, 8, trickle=PNG)
            self.assertIsNotNone(took, "a client trickling its body kept the connection for 8 s")
            # The deadline does not cut what behaves: a keep-alive connection
            # idle between requests for less than it, then a normal request.
            c = d.conn()
            for _ in range(3):
                st, _, _ = d.request("POST", "/predict", PNG, {"Content-Type": "image/png"}, conn=c)
                self.assertEqual(st, 200)
                time.sleep(0.5)
            c.close()
            self.assertEqual(metric(d, 'loupe_refused_total{reason="request_timeout"}'), 1)
        finally:
            self.assertEqual(d.stop(), 0)

    def test_slow_reader_is_cut_at_the_request_deadline(self):
        """A client that takes a large answer one byte at a time keeps the
        connection active (no idle timeout); the deadline also bounds delivery."""
        static = tempfile.mkdtemp(prefix="loupe-static-")
        with open(os.path.join(static, "big.bin"), "wb") as f:
            f.write(os.urandom(1 << 20) * 24)
        d = fx.Daemon(LOUPE, STORE, "--drain-grace", "0", "--timeout", "30", "--request-timeout", "2",
                      "--static", static)
        try:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", d.port))
            s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(0.2)
            # Take the answer 16 bytes at a time: never idle, far from done.
            # Bytes the kernel buffered still arrive after the cut, so the
            # daemon's side tells: the cut is counted, and the request ends.
            t0, counted = time.time(), None
            while time.time() - t0 < 10 and counted is None:
                try:
                    s.recv(16)
                except (socket.timeout, ConnectionResetError):
                    pass
                time.sleep(0.05)
                if metric(d, 'loupe_refused_total{reason="request_timeout"}') == 1:
                    counted = time.time() - t0
            self.assertIsNotNone(counted, "a slow reader held the connection for 10 s")
            self.assertGreater(counted, 1.5)
            # In flight: only the /metrics request asking.
            self.assertEqual(wait_for(lambda: metric(d, "loupe_http_requests_in_flight"), 1), 1)
            s.close()
        finally:
            self.assertEqual(d.stop(), 0)
            shutil.rmtree(static)

    def test_connections_per_address(self):
        d = fx.Daemon(LOUPE, STORE, "--drain-grace", "0", "--max-conn-per-ip", "2")
        try:
            # Two keep-alive connections, each known to be accepted: one request answered on each.
            a, b = d.conn(), d.conn()
            for c in (a, b):
                self.assertEqual(d.request("GET", "/healthz", conn=c)[0], 200)
            third = d.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertTrue(third.startswith(b"HTTP/1.1 503"), third)
            self.assertIn(b"Connection: close", third)
            self.assertIn(b"Retry-After: 1", third)
            body = json.loads(third.split(b"\r\n\r\n", 1)[1])
            self.assertEqual(body["error"]["code"], "unavailable")
            self.assertIn("too many connections from your address (--max-conn-per-ip 2)", body["error"]["message"])
            self.assertEqual(metric(d, 'loupe_refused_total{reason="per_ip"}', conn=b), 1)
            # Idle connections past the limit do not keep their slots for --timeout: cut in about 2 s.
            idle = [socket.create_connection(("127.0.0.1", d.port)) for _ in range(5)]
            took = [closed_within(s, 8) for s in idle]
            for s in idle:
                s.close()
            self.assertTrue(all(t is not None and t < 6 for t in took), took)
            self.assertEqual(d.request("GET", "/healthz", conn=b)[0], 200)  # the allowed ones stay
            a.close()  # the closed one no longer counts
            self.assertEqual(wait_for(lambda: d.request("GET", "/healthz")[0], 200), 200)
            b.close()
        finally:
            self.assertEqual(d.stop(), 0)

    def test_buffered_bodies_have_a_global_budget(self):
        """Bodies take memory from --body-budget as their bytes arrive; past it, 503."""
        d = fx.Daemon(LOUPE, STORE, "--drain-grace", "0", "--max-body", "1M", "--body-budget", "2M")
        held = []
        head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: 1000000\r\n\r\n")
        try:
            for _ in range(2):  # two uploads, 900,000 of their 1,000,000 bytes sent
                s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
                s.sendall(head + PNG[:100] + bytes(899900))
                held.append(s)
            self.assertEqual(wait_for(lambda: metric(d, "loupe_buffered_body_bytes"), 2000000), 2000000)
            third = d.raw(head + bytes(1000000))
            self.assertTrue(third.startswith(b"HTTP/1.1 503"), third[:300])
            self.assertIn(b"Retry-After: 1", third)
            self.assertIn(b"--body-budget 2097152 bytes", third)
            self.assertEqual(metric(d, 'loupe_refused_total{reason="body_budget"}'), 1)
            self.assertEqual(metric(d, "loupe_buffered_body_bytes"), 2000000)  # the refused one holds nothing
            for s in held:
                s.close()
            held = []
            self.assertEqual(wait_for(lambda: metric(d, "loupe_buffered_body_bytes"), 0), 0)
            st, _, body = d.json("POST", "/predict", PNG, {"Content-Type": "image/png"})
            self.assertEqual(st, 200, body)
        finally:
            for s in held:
                s.close()
            self.assertEqual(d.stop(), 0)

    def test_declared_bodies_hold_nothing(self):
        """Headers that promise large bodies and send none take no memory and refuse nobody."""
        d = fx.Daemon(LOUPE, STORE, "--drain-grace", "0", "--max-body", "1M", "--body-budget", "2M")
        held = []
        try:
            for _ in range(10):
                s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
                s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                          b"Content-Length: 1000000\r\n\r\n")
                held.append(s)
            st, _, body = d.json("POST", "/predict", PNG, {"Content-Type": "image/png"})
            self.assertEqual(st, 200, body)
            self.assertEqual(metric(d, "loupe_buffered_body_bytes"), 0)
            self.assertEqual(metric(d, 'loupe_refused_total{reason="body_budget"}'), 0)
        finally:
            for s in held:
                s.close()
            self.assertEqual(d.stop(), 0)

    def test_refused_mid_body_gives_its_memory_back(self):
        """A chunked body past --max-body: 413, and the part already buffered is returned at once."""
        d = fx.Daemon(LOUPE, STORE, "--drain-grace", "0", "--max-body", "1M")
        try:
            with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
                s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n")
                chunk = b"%x\r\n" % 262144 + bytes(262144) + b"\r\n"
                for _ in range(3):
                    s.sendall(chunk)
                self.assertGreater(wait_for(lambda: metric(d, "loupe_buffered_body_bytes"), 786432), 0)
                s.sendall(chunk * 2)  # past 1M: refused, and what was kept is dropped
                self.assertEqual(wait_for(lambda: metric(d, "loupe_buffered_body_bytes"), 0), 0)
                s.sendall(b"0\r\n\r\n")
                self.assertTrue(s.recv(65536).startswith(b"HTTP/1.1 413"))
        finally:
            self.assertEqual(d.stop(), 0)

    def test_budget_below_max_body_is_refused(self):
        p = subprocess.run([LOUPE, "serve", "--max-body", "8M", "--body-budget", "1M"], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("--body-budget (1048576 bytes) must be at least --max-body (8388608 bytes)", p.stderr)

    def test_v2_counts_the_data_before_allocating_the_shape(self):
        """shape [65536,784] with one row of data: 205 MB for the declared shape.
        The daemon gets less than that of address space to spare (or, under
        ASan, a cap on one allocation): allocating before counting answered 500
        out of memory; counting first answers 400 with the reason."""
        env = None
        asan = is_asan(LOUPE)
        if asan:
            env = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") +
                   ":allocator_may_return_null=1:max_allocation_size_mb=100"}
        d = fx.Daemon(LOUPE, STORE, "--drain-grace", "0", env=env)
        try:
            body = json.dumps({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32",
                                           "data": [0.5] * 784}]})
            self.assertEqual(d.request("POST", "/v2/models/alpha/infer", body)[0], 200)
            if not asan:
                with open("/proc/%d/status" % d.proc.pid) as f:
                    vm = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmSize:"))
                resource.prlimit(d.proc.pid, resource.RLIMIT_AS, (vm + (120 << 20), resource.RLIM_INFINITY))
            huge = json.dumps({"inputs": [{"name": "input", "shape": [65536, 784], "datatype": "FP32",
                                           "data": [0.5] * 784}]})
            st, _, b = d.json("POST", "/v2/models/alpha/infer", huge)
            self.assertEqual(st, 400, b)
            self.assertEqual(b["error"], '"data" has 784 values, the shape says 51380224')
            too_many = json.dumps({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32",
                                               "data": [0.5] * 785}]})
            st, _, b = d.json("POST", "/v2/models/alpha/infer", too_many)
            self.assertEqual((st, b["error"]), (400, '"data" has more values than the shape says (784)'))
            deep = json.dumps({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32",
                                           "data": [[[[[[[0.5]]]]]]]}]})
            st, _, b = d.json("POST", "/v2/models/alpha/infer", deep)
            self.assertEqual((st, b["error"]), (400, '"data" is nested deeper than the shape'))
            self.assertEqual(d.request("POST", "/v2/models/alpha/infer", body)[0], 200)
        finally:
            self.assertEqual(d.stop(), 0)


class Tls(unittest.TestCase):
    """--tls-cert/--tls-key: HTTPS from the daemon itself."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="loupe-tls-")
        cls.cert, cls.key = os.path.join(cls.dir, "cert.pem"), os.path.join(cls.dir, "key.pem")
        for cert, key in ((cls.cert, cls.key), (cls.cert + ".other", cls.key + ".other")):
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                            "-days", "2", "-subj", "/CN=localhost", "-addext",
                            "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    def test_https_serves_and_plain_http_does_not(self):
        d = fx.Daemon(LOUPE, STORE, "--drain-grace", "0", "--tls-cert", self.cert, "--tls-key", self.key)
        try:
            self.assertEqual(d.scheme, "https")
            ctx = ssl.create_default_context(cafile=self.cert)
            c = http.client.HTTPSConnection("localhost", d.port, context=ctx, timeout=30)
            c.request("POST", "/predict", PNG, {"Content-Type": "image/png"})
            r = c.getresponse()
            body = json.loads(r.read())
            self.assertEqual(r.status, 200, body)
            plain = fx.Daemon(LOUPE, STORE, "--drain-grace", "0")
            try:
                self.assertEqual(plain.scheme, "http")
                st, _, want = plain.json("POST", "/predict", PNG, {"Content-Type": "image/png"})
            finally:
                plain.stop()
            self.assertEqual(st, 200)
            self.assertEqual((body["index"], body["probabilities"]), (want["index"], want["probabilities"]))
            c.request("GET", "/healthz")  # the same TLS connection, kept alive
            r = c.getresponse()
            self.assertEqual((r.status, json.loads(r.read())), (200, {"status": "ok"}))
            c.close()
            # A client that does not trust the certificate is refused by its own TLS stack.
            with self.assertRaises(ssl.SSLError):
                strict = http.client.HTTPSConnection("localhost", d.port, timeout=30,
                                                     context=ssl.create_default_context())
                strict.request("GET", "/healthz")
                strict.getresponse()
            # Plain HTTP on the TLS port gets no HTTP answer.
            self.assertFalse(d.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", read_timeout=5).startswith(b"HTTP/"))
        finally:
            self.assertEqual(d.stop(), 0)

    def test_bad_tls_settings_stop_the_start_with_a_reason(self):
        cases = [
            (["--tls-cert", self.cert], "--tls-cert and --tls-key go together"),
            (["--tls-cert", self.cert, "--tls-key", os.path.join(self.dir, "missing.pem")],
             "cannot read --tls-key %s: No such file or directory" % os.path.join(self.dir, "missing.pem")),
            (["--tls-cert", __file__, "--tls-key", self.key], "cannot read --tls-cert %s: not a PEM file" % __file__),
            (["--tls-cert", self.cert, "--tls-key", self.key + ".other"], "a certificate and key that do not match"),
        ]
        for args, want in cases:
            p = subprocess.run([LOUPE, "serve", "--models", STORE, "--port", "0", "--host", "127.0.0.1", *args],
                               capture_output=True, text=True, timeout=60)
            self.assertNotEqual(p.returncode, 0, args)
            self.assertIn(want, p.stderr, args)


class ApiToken(unittest.TestCase):
    """--api-token guards every route that names or runs a model; probes, metrics and the page stay open."""

    @classmethod
    def setUpClass(cls):
        cls.empty = tempfile.mkdtemp(prefix="loupe-nostatic-")  # no page: / falls back to a list of the models
        cls.d = fx.Daemon(LOUPE, STORE, "--drain-grace", "0", "--cors-origin", "https://page.example",
                          "--static", cls.empty,
                          env={"LOUPE_API_TOKEN": "s3cret-api", "LOUPE_ADMIN_TOKEN": "s3cret-admin"})

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        shutil.rmtree(cls.empty)
        if rc != 0:
            raise AssertionError("loupe serve exited %d\n%s" % (rc, cls.d.read_log()))

    GOOD = {"Authorization": "Bearer s3cret-api"}

    def test_model_routes_need_the_token(self):
        v2 = json.dumps({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}]})
        routes = [("GET", "/v1/models", None), ("GET", "/v1/models/alpha", None), ("HEAD", "/v1/models/alpha", None),
                  ("GET", "/v1/models/alpha/", None), ("GET", "/v1/%6dodels/alpha", None),
                  ("GET", "/v1/models/alpha/layers", None), ("POST", "/predict", PNG),
                  ("POST", "/v1/models/alpha/predict", PNG), ("POST", "/v1/models/alpha/saliency", PNG),
                  ("GET", "/v2/models/alpha", None), ("GET", "/v2/models/alpha/ready", None),
                  ("POST", "/v2/models/alpha/infer", v2)]
        for method, path, body in routes:
            for headers, why in (({}, "this route needs Authorization: Bearer <token>"),
                                 ({"Authorization": "Bearer wrong"}, "wrong bearer token"),
                                 ({"Authorization": "Bearer s3cret-admin"}, "wrong bearer token"),
                                 ({"Authorization": "s3cret-api"}, "wrong bearer token")):
                h = dict(headers, **{"Content-Type": "image/png"})
                if method == "HEAD":
                    st, hd, _ = self.d.request(method, path, body, h)
                    self.assertEqual((st, hd.get("www-authenticate")), (401, "Bearer"), path)
                    continue
                st, hd, b = self.d.json(method, path, body, h)
                self.assertEqual(st, 401, (path, headers, b))
                self.assertEqual(hd.get("content-type"), "application/json")
                # A page on another origin can read why.
                self.assertIn("WWW-Authenticate", hd.get("access-control-expose-headers", ""))
                self.assertEqual(hd.get("www-authenticate"), "Bearer")
                msg = b["error"] if path.startswith("/v2") else b["error"]["message"]
                if not path.startswith("/v2"):
                    self.assertEqual(b["error"]["code"], "unauthorized")
                self.assertTrue(msg.startswith(why), (path, msg))
            for good in (self.GOOD, {"Authorization": "bearer s3cret-api"}):  # the scheme is case-insensitive
                h = dict(good, **{"Content-Type": "image/png"})
                st, _, b = self.d.request(method, path, body, h)
                self.assertEqual(st, 200, (path, good, b[:200]))

    def test_cnn_routes_need_the_token_before_anything_else(self):
        """filters and activations are refused for the token first (an MLP would get 422 after it)."""
        for method, path in (("GET", "/v1/models/alpha/filters/0/0"), ("POST", "/v1/models/alpha/filters/0/0"),
                             ("POST", "/v1/models/alpha/activations/0")):
            st, _, b = self.d.json(method, path, PNG, {"Content-Type": "image/png"})
            self.assertEqual((st, b["error"]["code"]), (401, "unauthorized"), path)
            st, _, b = self.d.json(method, path, PNG, dict(self.GOOD, **{"Content-Type": "image/png"}))
            self.assertEqual(st, 422, (path, b))

    def test_root_lists_models_only_with_the_token(self):
        st, _, page = self.d.request("GET", "/")
        self.assertEqual(st, 200)
        self.assertIn(b"listed with the API token", page)
        self.assertNotIn(b"alpha", page)
        st, _, page = self.d.request("GET", "/", headers=self.GOOD)
        self.assertIn(b"/v1/models/alpha", page)

    def test_probes_metrics_and_page_stay_open(self):
        for path in ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready", "/v2"):
            self.assertEqual(self.d.request("GET", path)[0], 200, path)

    def test_admin_token_is_separate(self):
        st, _, b = self.d.json("POST", "/v1/admin/reload", b"", self.GOOD)
        self.assertEqual(st, 401, b)
        st, _, b = self.d.json("POST", "/v1/admin/reload", b"", {"Authorization": "Bearer s3cret-admin"})
        self.assertEqual(st, 200, b)

    def test_refused_upload_is_not_read(self):
        """401 comes before the body: a large unauthenticated upload is not buffered."""
        out = self.d.raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                         b"Content-Length: 900000\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 401"), out)
        self.assertEqual(metric(self.d, "loupe_buffered_body_bytes"), 0)


class Files(unittest.TestCase):
    """A static file swapped for a symlink (or another file) between its check and its open is not served."""

    def test_swap_after_the_check(self):
        root = tempfile.mkdtemp(prefix="loupe-swap-")
        static, secret = os.path.join(root, "static"), os.path.join(root, "secret.txt")
        os.mkdir(static)
        with open(secret, "w") as f:
            f.write("TOP SECRET\n")
        page = os.path.join(static, "page.txt")
        d = fx.Daemon(LOUPE, STORE, "--drain-grace", "0", "--static", static,
                      env={"LOUPE_TEST_HOOKS": "1", "LOUPE_TEST_OPEN_DELAY_MS": "3000"})
        try:
            for swap in ("symlink", "rename"):
                with open(page, "w") as f:
                    f.write("public\n")
                self.assertEqual(d.request("GET", "/page.txt")[2], b"public\n")
                got = {}
                t = threading.Thread(target=lambda: got.update(r=d.request("GET", "/page.txt")))
                t.start()
                time.sleep(1.0)  # resolved and checked: now inside the hook's 3 s pause
                tmp = page + ".new"
                if swap == "symlink":
                    os.symlink(secret, tmp)
                else:
                    with open(tmp, "w") as f:
                        f.write("replaced\n")
                os.replace(tmp, page)
                t.join(30)
                st, _, body = got["r"]
                self.assertNotIn(b"SECRET", body, swap)
                self.assertEqual(st, 404, (swap, body))
                os.unlink(page)
        finally:
            self.assertEqual(d.stop(), 0)
            shutil.rmtree(root)


if __name__ == "__main__":
    unittest.main()
