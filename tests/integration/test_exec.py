"""Integration tests of the execution core: lanes, dynamic batching, 429/503, cancelled clients, request ids.

    LOUPE_BIN=build/cli/loupe LOUPE_STORE=/tmp/store /usr/bin/python3 test_exec.py Health Batching ...

Deterministic, not timed: the daemon runs with LOUPE_TEST_HOOKS=1, whose POST /v1/test/hold holds a
worker until POST /v1/test/release; the tests hold every worker, queue requests behind them, read
the queue gauges from /metrics, then release. The store is test_server.py's (alpha, beta: MLPs).
"""
import concurrent.futures as cf
import http.client
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loupe_fixture as fx  # noqa: E402

LOUPE = os.environ.get("LOUPE_BIN", "build/cli/loupe")
STORE = os.environ.get("LOUPE_STORE", "/tmp/loupe-test-store")
IMAGES, LABELS = fx.test_set()
HOOKS = {"LOUPE_TEST_HOOKS": "1"}


def png(i):
    return fx.png_gray(IMAGES[i])


class Held(unittest.TestCase):
    """A daemon with test hooks; helpers to hold and release its workers."""
    args = ("--threads", "4", "--workers", "1", "--queue", "64", "--drain-grace", "0")

    @classmethod
    def setUpClass(cls):
        cls.d = fx.Daemon(LOUPE, STORE, *cls.args, env=HOOKS)
        cls.pool = cf.ThreadPoolExecutor(96)

    @classmethod
    def tearDownClass(cls):
        cls.d.request("POST", "/v1/test/release")
        cls.pool.shutdown(wait=True)
        rc = cls.d.stop()
        fx.require(rc == 0, "loupe serve exited %d\n%s" % (rc, cls.d.read_log()))

    def gauge(self, name, lane="main"):
        text = self.d.request("GET", "/metrics")[2].decode()
        m = re.search(r'^%s\{lane="%s"\} (\S+)$' % (name, lane), text, re.M)
        return float(m.group(1)) if m else 0.0

    def counter(self, pattern):
        text = self.d.request("GET", "/metrics")[2].decode()
        m = re.search(r"^%s (\S+)$" % pattern, text, re.M)
        return float(m.group(1)) if m else 0.0

    def wait_for(self, what, cond, limit=30):
        """Poll cond() until it holds; a bound for a broken daemon, not a timing assertion."""
        end = time.time() + limit
        while time.time() < end:
            if cond():
                return
            time.sleep(0.01)
        self.fail("gave up waiting for " + what + "\n" + self.d.read_log()[-3000:])

    def hold(self, lane="main", n=1):
        """Hold n workers of lane (idle until then: each test holds first); returns the futures of the held requests."""
        # The previous test's last job may still be counted as running just after its client got the
        # answer (the worker counts it done after it answers): a count taken then would never be reached.
        self.wait_for("an idle %s lane" % lane, lambda: self.gauge("loupe_queue_running", lane) == 0
                      and self.gauge("loupe_queue_queued", lane) == 0)
        futs = [self.pool.submit(self.d.request, "POST", "/v1/test/hold?lane=" + lane) for _ in range(n)]
        self.wait_for("%d held %s worker(s)" % (n, lane), lambda: self.gauge("loupe_queue_running", lane) >= n)
        return futs

    def release(self, futs):
        self.assertEqual(self.d.request("POST", "/v1/test/release")[0], 200)
        for f in futs:
            self.assertEqual(f.result(timeout=30)[0], 200)

    def predict(self, body, path="/v1/models/alpha/predict", headers=None, ctype="image/png"):
        h = {"Content-Type": ctype}
        h.update(headers or {})
        return self.d.json("POST", path, body, h)


class Health(Held):
    """Health, readiness and metrics answer while every worker of both lanes is busy."""
    args = Held.args + ("--expensive-concurrency", "1")

    def test_probes_answer_with_all_workers_held(self):
        held = self.hold("main") + self.hold("heavy")
        queued = self.pool.submit(self.predict, png(0))
        self.wait_for("a queued predict", lambda: self.gauge("loupe_queue_queued") == 1)
        for path in ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v1/models"):
            st, _, _ = self.d.request("GET", path)
            self.assertEqual(st, 200, path)
        self.assertFalse(queued.done(), "the predict ran although every worker was held")
        self.release(held)
        st, _, b = queued.result(timeout=30)
        self.assertEqual(st, 200, b)
        self.assertEqual(b["batch"], 1)


class ExplainLane(Held):
    """Explanations and class visualisations run on the heavy lane for every kind of model, MLPs too:
    with its one worker held and no queue they answer 429 with Retry-After, while predictions on the
    main lane still answer; once it is released they run."""
    args = Held.args + ("--expensive-concurrency", "1", "--expensive-queue", "0")

    def test_429_on_the_heavy_lane(self):
        held = self.hold("heavy")
        for path, body in (("/v1/models/alpha/explain?method=gradient", png(0)),
                           ("/v1/models/alpha/explain?method=occlusion", png(0)),
                           ("/v1/models/alpha/classes/Sneaker/visualize", None)):
            st, h, b = self.d.json("POST" if body else "GET", path, body, {"Content-Type": "image/png"} if body else {})
            self.assertEqual(st, 429, (path, b))
            self.assertEqual(b["error"]["code"], "too_many_requests", b)
            self.assertIn("retry-after", h)
        st, _, b = self.predict(png(0))
        self.assertEqual(st, 200, b)
        self.release(held)
        self.wait_for("an idle heavy lane", lambda: self.gauge("loupe_queue_running", "heavy") == 0)
        st, _, b = self.d.json("POST", "/v1/models/alpha/explain?method=smoothgrad&samples=4&format=json", png(0),
                               {"Content-Type": "image/png"})
        self.assertEqual(st, 200, b)
        self.assertEqual(b["params"]["samples"], 4)


class QueueFull(Held):
    """A full lane answers 429 with Retry-After at once, on predict and V2 infer alike."""
    args = ("--threads", "4", "--workers", "1", "--queue", "1", "--drain-grace", "0")

    def test_429(self):
        held = self.hold("main")
        queued = self.pool.submit(self.predict, png(1))
        self.wait_for("a queued predict", lambda: self.gauge("loupe_queue_queued") == 1)
        st, h, b = self.predict(png(2))
        self.assertEqual(st, 429, b)
        self.assertEqual(h.get("retry-after"), "1")
        self.assertEqual(b["error"]["code"], "too_many_requests")
        self.assertIn("main lane is full", b["error"]["message"])
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": [0.0] * 784}]}
        st, h, b = self.d.json("POST", "/v2/models/alpha/infer", json.dumps(body).encode(),
                               {"Content-Type": "application/json"})
        self.assertEqual(st, 429, b)
        self.assertIn("full", b["error"])  # V2's own error shape
        self.assertEqual(self.counter(r'loupe_queue_rejected_total\{lane="main",reason="full"\}'), 2)
        self.release(held)
        self.assertEqual(queued.result(timeout=30)[0], 200)


class QueueTimeout(Held):
    """--queue-timeout: a request still queued past it gets 503, not a late answer."""
    args = Held.args + ("--queue-timeout", "100")

    def test_503(self):
        held = self.hold("main")
        late = self.pool.submit(self.predict, png(3))
        self.wait_for("a queued predict", lambda: self.gauge("loupe_queue_queued") == 1)
        time.sleep(0.3)  # the request is now older than 100 ms, however slow the machine
        self.release(held)
        st, h, b = late.result(timeout=30)
        self.assertEqual(st, 503, b)
        self.assertEqual(b["error"]["code"], "unavailable")
        self.assertIn("--queue-timeout", b["error"]["message"])
        self.assertEqual(h.get("retry-after"), "1")
        self.assertEqual(self.counter(r'loupe_queue_rejected_total\{lane="main",reason="timeout"\}'), 1)
        # A fresh request is well inside the limit.
        self.assertEqual(self.predict(png(3))[0], 200)


class Batching(Held):
    """Requests queued behind a held worker go through one forward pass, each with its own answer."""

    def sequential(self, idx):
        out = {}
        for i in idx:
            st, _, b = self.predict(png(i))
            self.assertEqual(st, 200, b)
            self.assertEqual(b["batch"], 1)  # alone: nothing else queued
            out[i] = b
        return out

    def test_coalesced_answers_equal_sequential(self):
        idx = list(range(20, 36))
        alone = self.sequential(idx)
        held = self.hold("main")
        futs = {i: self.pool.submit(self.predict, png(i)) for i in idx}
        # One bad upload among them fails alone: a 28x28 header (so the main lane) over corrupt data.
        bad = self.pool.submit(self.predict, fx.png_gray(IMAGES[0], idat=b"not zlib at all"))
        self.wait_for("17 queued", lambda: self.gauge("loupe_queue_queued") == 17)
        before = self.counter(r'loupe_batch_size_count\{model="alpha"\}')
        self.release(held)
        st, _, b = bad.result(timeout=30)
        self.assertEqual(st, 400, b)
        self.assertEqual(b["error"]["code"], "bad_image")
        for i in idx:
            st, _, b = futs[i].result(timeout=30)
            self.assertEqual(st, 200, b)
            self.assertEqual(b["batch"], 16, b)
            a = alone[i]
            self.assertEqual(b["index"], a["index"])
            np.testing.assert_allclose(b["probabilities"], a["probabilities"], atol=1e-5, rtol=0)
        # One forward pass of 16 for all of them.
        self.assertEqual(self.counter(r'loupe_batch_size_count\{model="alpha"\}'), before + 1)
        self.assertGreaterEqual(self.counter(r'loupe_batch_size_bucket\{model="alpha",le="16"\}'), 1)

    def test_v2_and_predict_share_a_pass(self):
        held = self.hold("main")
        x = (IMAGES[40:43].reshape(3, 784) / 255.0).astype(np.float32)
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 784], "data": x.ravel().tolist()}]}
        v2 = self.pool.submit(self.d.json, "POST", "/v2/models/alpha/infer", json.dumps(body).encode(),
                              {"Content-Type": "application/json"})
        p = self.pool.submit(self.predict, png(40))
        self.wait_for("2 queued", lambda: self.gauge("loupe_queue_queued") == 2)
        self.release(held)
        st, _, out = v2.result(timeout=30)
        self.assertEqual(st, 200, out)
        st, _, b = p.result(timeout=30)
        self.assertEqual(st, 200, b)
        self.assertEqual(b["batch"], 4)  # 3 rows of V2 + 1 predict
        probs = np.array(out["outputs"][0]["data"]).reshape(3, 10)
        np.testing.assert_allclose(probs[0], b["probabilities"], atol=1e-5, rtol=0)

    def test_other_models_batch_apart(self):
        held = self.hold("main")
        a = [self.pool.submit(self.predict, png(i)) for i in range(50, 53)]
        bb = [self.pool.submit(self.predict, png(i), "/v1/models/beta/predict") for i in range(50, 52)]
        self.wait_for("5 queued", lambda: self.gauge("loupe_queue_queued") == 5)
        self.release(held)
        self.assertEqual([f.result(timeout=30)[2]["batch"] for f in a], [3, 3, 3])
        self.assertEqual([f.result(timeout=30)[2]["batch"] for f in bb], [2, 2])


class NoBatching(Held):
    """--max-batch 1: every request its own pass."""
    args = Held.args + ("--max-batch", "1")

    def test_each_alone(self):
        held = self.hold("main")
        futs = [self.pool.submit(self.predict, png(i)) for i in range(60, 66)]
        self.wait_for("6 queued", lambda: self.gauge("loupe_queue_queued") == 6)
        self.release(held)
        for f in futs:
            st, _, b = f.result(timeout=30)
            self.assertEqual(st, 200, b)
            self.assertEqual(b["batch"], 1)


class V2Rows(Held):
    """A V2 request of N rows counts N against --max-batch: passes never exceed it."""
    args = Held.args + ("--max-batch", "4")

    def test_rows_split_passes(self):
        held = self.hold("main")
        x = (IMAGES[70:73].reshape(3, 784) / 255.0).astype(np.float32)
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 784],
                                       "data": x.ravel().tolist()}]}).encode()
        v2 = [self.pool.submit(self.d.json, "POST", "/v2/models/alpha/infer", body,
                               {"Content-Type": "application/json"}) for _ in range(2)]
        self.wait_for("2 queued", lambda: self.gauge("loupe_queue_queued") == 2)
        p = self.pool.submit(self.predict, png(70))
        self.wait_for("3 queued", lambda: self.gauge("loupe_queue_queued") == 3)
        count = self.counter(r'loupe_batch_size_count\{model="alpha"\}')
        total = self.counter(r'loupe_batch_size_sum\{model="alpha"\}')
        self.release(held)
        for f in v2:
            self.assertEqual(f.result(timeout=30)[0], 200)
        st, _, b = p.result(timeout=30)
        self.assertEqual(st, 200, b)
        self.assertEqual(b["batch"], 4)  # the second V2 request's 3 rows and this image
        self.wait_for("two passes", lambda: self.counter(r'loupe_batch_size_count\{model="alpha"\}') == count + 2)
        self.assertEqual(self.counter(r'loupe_batch_size_sum\{model="alpha"\}'), total + 7)


class Concurrent(unittest.TestCase):
    """Many clients at once get the answers one client gets alone (default settings)."""

    def test_many_clients(self):
        d = fx.Daemon(LOUPE, STORE, "--threads", "4", "--drain-grace", "0")
        try:
            idx = list(range(100, 164))
            alone = {}
            for i in idx:
                st, _, b = d.json("POST", "/v1/models/alpha/predict", png(i), {"Content-Type": "image/png"})
                self.assertEqual(st, 200, b)
                alone[i] = b

            def client(i):
                return [d.json("POST", "/v1/models/alpha/predict", png(i), {"Content-Type": "image/png"})
                        for _ in range(3)]

            with cf.ThreadPoolExecutor(32) as ex:
                results = dict(zip(idx, ex.map(client, idx)))
            for i in idx:
                for st, _, b in results[i]:
                    self.assertEqual(st, 200, b)
                    self.assertEqual(b["index"], alone[i]["index"])
                    np.testing.assert_allclose(b["probabilities"], alone[i]["probabilities"], atol=1e-5, rtol=0)
        finally:
            self.assertEqual(d.stop(), 0)


class Cancelled(Held):
    """A client that leaves while its request is queued is skipped before the model work, and counted."""

    def send_raw_predict(self, body):
        """A predict on a socket of its own, not read: the test closes it while the request is queued."""
        s = socket.create_connection(("127.0.0.1", self.d.port), timeout=10)
        s.sendall(b"POST /v1/models/alpha/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        return s

    def test_closed_client_skipped(self):
        held = self.hold("main")
        s = self.send_raw_predict(png(7))
        self.wait_for("the predict queued", lambda: self.gauge("loupe_queue_queued") == 1)
        before_c = self.counter("loupe_requests_cancelled_total")
        s.close()
        before = self.counter(r'loupe_batch_size_count\{model="alpha"\}')
        self.release(held)
        self.wait_for("the cancelled count", lambda: self.counter("loupe_requests_cancelled_total") == before_c + 1)
        # No forward pass ran for it.
        self.assertEqual(self.counter(r'loupe_batch_size_count\{model="alpha"\}'), before)
        self.wait_for("the access log line", lambda: " 499 " in self.d.read_log())

    def test_closed_client_first_in_a_batch(self):
        # The gone client's job leads the batch; the others still get their answers from one pass.
        held = self.hold("main")
        s = self.send_raw_predict(png(9))
        self.wait_for("the first predict queued", lambda: self.gauge("loupe_queue_queued") == 1)
        others = [self.pool.submit(self.predict, png(i)) for i in (10, 11)]
        self.wait_for("3 queued", lambda: self.gauge("loupe_queue_queued") == 3)
        before = self.counter("loupe_requests_cancelled_total")
        s.close()
        self.release(held)
        for f in others:
            st, _, b = f.result(timeout=30)
            self.assertEqual(st, 200, b)
            self.assertEqual(b["batch"], 2)
        self.wait_for("the cancelled count", lambda: self.counter("loupe_requests_cancelled_total") == before + 1)
        self.assertEqual(self.d.request("GET", "/healthz")[0], 200)

    def test_hung_up_mid_body_frees_the_connection(self):
        """A client that sends part of a body and closes frees its connection at once. The close
        arrives with the data; libmicrohttpd's epoll loop (MHD_USE_AUTO) missed it and held the
        connection until --timeout (30 s), so about 35 such clients a second kept all of the default
        1024 connections busy and every other client waited (bench/soak.py stalled 27 s at a time)."""
        d = fx.Daemon(LOUPE, STORE, "--max-connections", "4", "--threads", "2", "--drain-grace", "0")
        try:
            body = png(3)
            for _ in range(12):
                with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
                    s.sendall(b"POST /v1/models/alpha/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                              b"Content-Length: %d\r\n\r\n" % len(body) + body[:len(body) // 2])
            deadline = time.time() + 5
            while time.time() < deadline and d.read_log().count("(aborted)") < 12:
                time.sleep(0.05)
            self.assertEqual(d.read_log().count("(aborted)"), 12, d.read_log()[-2000:])
            st, _, b = d.json("POST", "/v1/models/alpha/predict", body, {"Content-Type": "image/png"})
            self.assertEqual(st, 200, b)
        finally:
            self.assertEqual(d.stop(), 0)


class RequestId(Held):
    """X-Request-ID is echoed, or made; the access log carries it."""

    def test_round_trip(self):
        st, h, _ = self.predict(png(8), headers={"X-Request-ID": "trace-42.a:b"})
        self.assertEqual(st, 200)
        self.assertEqual(h.get("x-request-id"), "trace-42.a:b")
        self.wait_for("the log line", lambda: "id=trace-42.a:b" in self.d.read_log())
        st, h, _ = self.d.request("GET", "/healthz")
        made = h.get("x-request-id", "")
        self.assertRegex(made, r"^[0-9a-f]{16}$")
        st, h2, _ = self.d.request("GET", "/healthz")
        self.assertNotEqual(h2.get("x-request-id"), made)
        # Not echoed when it could forge a log line or a header: replaced by a made one.
        st, h, _ = self.d.request("GET", "/healthz", headers={"X-Request-ID": "a b\"c"})
        self.assertRegex(h.get("x-request-id", ""), r"^[0-9a-f]{16}$")
        st, h, _ = self.d.request("GET", "/healthz", headers={"X-Request-ID": "x" * 65})
        self.assertRegex(h.get("x-request-id", ""), r"^[0-9a-f]{16}$")


class HeavyUploads(Held):
    """An upload that declares a huge image decodes on the heavy lane: the main lane stays free."""
    args = Held.args + ("--expensive-concurrency", "1")

    def test_large_decode_takes_the_heavy_lane(self):
        held = self.hold("heavy")
        bomb = fx.png_bomb(2000, 1000)  # 2 Mpx > --large-pixels' default of 1 Mpx
        slow = self.pool.submit(self.predict, bomb)
        self.wait_for("the upload queued on the heavy lane", lambda: self.gauge("loupe_queue_queued", "heavy") == 1)
        # Small predicts still pass through the main lane meanwhile.
        for i in range(5):
            self.assertEqual(self.predict(png(i))[0], 200)
        self.assertFalse(slow.done())
        self.release(held)
        st, _, b = slow.result(timeout=60)
        self.assertEqual(st, 200, b)


class PortInUse(unittest.TestCase):
    """The listeners share a port through SO_REUSEPORT, but a second daemon on a busy port fails
    instead of taking half its connections; daemons given port 0 never share one."""

    def test_second_daemon_refused(self):
        import subprocess
        a = fx.Daemon(LOUPE, STORE, "--drain-grace", "0")
        b = fx.Daemon(LOUPE, STORE, "--drain-grace", "0")
        try:
            self.assertNotEqual(a.port, b.port)
            p = subprocess.run([LOUPE, "serve", "--models", STORE, "--host", "127.0.0.1", "--port", str(a.port)],
                               capture_output=True, text=True, timeout=60)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("port %d is in use" % a.port, p.stderr)
            self.assertEqual(a.request("GET", "/healthz")[0], 200)
        finally:
            self.assertEqual(a.stop(), 0)
            self.assertEqual(b.stop(), 0)


class ShutdownRace(unittest.TestCase):
    """SIGTERM while a heavy job runs and keep-alive clients keep sending: every request gets an
    answer or a closed connection, and the daemon exits 0 (the lanes outlive the connection threads)."""

    def test_requests_during_stop(self):
        d = fx.Daemon(LOUPE, STORE, "--threads", "2", "--workers", "1", "--expensive-concurrency", "1",
                      "--drain-grace", "0", "--drain-timeout", "0.2")
        bomb = fx.png_bomb(39999999, 1)
        conns = [d.conn() for _ in range(6)]
        for c in conns:
            self.assertEqual(d.request("GET", "/healthz", conn=c)[0], 200)
        slow = threading.Thread(target=lambda: self._quiet(d.request, "POST", "/v1/models/alpha/predict", bomb,
                                                           {"Content-Type": "image/png"}))
        slow.start()
        time.sleep(0.2)  # the decode has started on the heavy lane (it takes seconds)
        d.signal(signal.SIGTERM)
        # Past --drain-timeout the daemon is stopping its lanes while the bomb still decodes; the
        # idle keep-alive connections are still open and their requests reach the connection threads.
        self.assertFalse(self._wait_log(d, "still in flight", 30) is None)
        statuses = []
        for c in conns:
            r = self._quiet(d.request, "POST", "/v1/models/alpha/predict", png(1), {"Content-Type": "image/png"}, c)
            statuses.append(r[0] if r else "closed")
        slow.join(60)
        rc = d.proc.wait(60)
        d.log.close()
        log = d.read_log()
        # 1: the heavy request outlived --drain-timeout, which the exit status says; never a crash.
        self.assertIn(rc, (0, 1), log[-3000:])
        self.assertNotIn("Sanitizer", log)
        self.assertIn("stopped", log)
        self.assertTrue(set(statuses) <= {200, 503, "closed"}, statuses)

    @staticmethod
    def _wait_log(d, text, limit):
        end = time.time() + limit
        while time.time() < end:
            if text in d.read_log():
                return True
            time.sleep(0.005)
        return None

    @staticmethod
    def _quiet(fn, *args):
        try:
            return fn(*args)
        except (OSError, http.client.HTTPException):
            return None


if __name__ == "__main__":
    unittest.main(verbosity=2)
