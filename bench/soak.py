"""Soak: a million mixed requests against one `loupe serve`, its resident memory sampled.

One daemon on a store of small MLPs (`loupe train-mlp --epochs 1` with small hidden layers,
trained here unless --store is given). --clients processes, each on its own keep-alive
connection, send their share of --requests from a fixed mix, in a seeded random order:

  predict_png, predict_json, predict_multipart, predict_default (/predict), saliency_png,
  saliency_json, v2_infer (4 rows of UINT8), health (/healthz, /metrics)      -> 200
  bad_png (truncated), bad_json, bad_param (?top_k=0), bad_v2 (data != shape)  -> 400
  unknown_model                                                                -> 404
  too_large (Content-Length past --max-body, the body never sent)              -> 413
  disconnect (a fresh connection sends the headers and half the body, closes)  -> no answer

Every --sample-every requests the daemon's VmRSS (/proc/PID/status) is read. After the run it
prints the RSS trace, the status histogram per kind with the slowest request of each, and the
request rate, and exits 1 when an answer's status is not the one its kind expects (a failed
connection counts as status 0), when a request takes more than --max-latency seconds (the
daemon stalled), when the RSS after warm-up (the first sample at or past --warmup requests)
grows by more than --max-growth percent at the end or at any later sample, or when the daemon
did not exit 0 on SIGTERM.

usage: /usr/bin/python3 bench/soak.py [--loupe build/cli/loupe] [--requests 1000000]
                                      [--clients 4] [--threads 2] [--store DIR] ...
Standard library plus numpy (tests/integration/loupe_fixture.py's image and daemon helpers).
"""
import argparse
import base64
import collections
import json
import multiprocessing as mp
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import loupe_fixture as fx  # noqa: E402

MAX_BODY = 1 << 20  # the daemon's --max-body here

# kind: (weight in the mix, expected status; None = no answer is read)
KINDS = {
    "predict_png": (30, 200), "predict_json": (8, 200), "predict_multipart": (4, 200),
    "predict_default": (3, 200), "saliency_png": (7, 200), "saliency_json": (3, 200),
    "v2_infer": (10, 200), "health": (5, 200),
    "bad_png": (5, 400), "bad_json": (4, 400), "bad_param": (3, 400), "bad_v2": (3, 400),
    "unknown_model": (4, 404), "too_large": (2, 413), "disconnect": (9, None),
}


def http_request(method, path, body=b"", ctype=None, extra=()):
    head = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1"]
    if ctype:
        head.append("Content-Type: " + ctype)
    if method == "POST":
        head.append("Content-Length: %d" % len(body))
    head.extend(extra)
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def build_requests(models, images):
    """kind -> list of (request bytes, bytes of it to send before hanging up, or None)."""
    out = collections.defaultdict(list)
    for i, img in enumerate(images):
        png = fx.png_gray(img)
        px = json.dumps({"pixels": (img / 255.0).round(4).tolist()}).encode()
        mp_body, mp_ct = fx.multipart("image", png)
        b64 = json.dumps({"image": base64.b64encode(png).decode()}).encode()
        rows = images[[(i + k) % len(images) for k in range(4)]].reshape(-1).tolist()
        v2 = json.dumps({"id": str(i), "inputs": [{"name": "input", "datatype": "UINT8", "shape": [4, 784],
                                                   "data": rows}]}).encode()
        for m in models:
            p = "/v1/models/%s/" % m
            out["predict_png"].append((http_request("POST", p + "predict", png, "image/png"), None))
            out["predict_json"].append((http_request("POST", p + "predict?top_k=3", px, "application/json"), None))
            out["predict_json"].append((http_request("POST", p + "predict", b64, "application/json"), None))
            out["predict_multipart"].append((http_request("POST", p + "predict", mp_body, mp_ct), None))
            out["saliency_png"].append((http_request("POST", p + "saliency?scale=2", png, "image/png"), None))
            out["saliency_json"].append((http_request("POST", p + "saliency?format=json&target=3", png,
                                                      "image/png"), None))
            out["v2_infer"].append((http_request("POST", "/v2/models/%s/infer" % m, v2, "application/json"), None))
            out["bad_png"].append((http_request("POST", p + "predict", png[:len(png) // 2], "image/png"), None))
            out["bad_json"].append((http_request("POST", p + "predict", px[:-7], "application/json"), None))
            out["bad_param"].append((http_request("POST", p + "predict?top_k=0", png, "image/png"), None))
            bad = json.loads(v2)
            bad["inputs"][0]["data"] = bad["inputs"][0]["data"][:-1]
            out["bad_v2"].append((http_request("POST", "/v2/models/%s/infer" % m, json.dumps(bad).encode(),
                                               "application/json"), None))
            whole = http_request("POST", p + "predict", png, "image/png")
            out["disconnect"].append((whole, len(whole) - len(png) // 2))
            whole = http_request("POST", "/v2/models/%s/infer" % m, v2, "application/json")
            out["disconnect"].append((whole, len(whole) - len(v2) // 3))
        out["predict_default"].append((http_request("POST", "/predict", png, "image/png"), None))
        out["unknown_model"].append((http_request("POST", "/v1/models/no-such-model/predict", png, "image/png"), None))
    out["health"] = [(http_request("GET", "/healthz"), None), (http_request("GET", "/metrics"), None),
                     (http_request("GET", "/v1/models"), None)]
    big = ("POST /v1/models/%s/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
           "Content-Length: %d\r\n\r\n" % (models[0], 2 * MAX_BODY)).encode()
    out["too_large"] = [(big, None)]
    return dict(out)


# ==== The client side: a minimal HTTP/1.1 client (http.client costs more CPU than the daemon) ====

class Conn:
    def __init__(self, port, timeout):
        self.port, self.timeout, self.sock, self.buf = port, timeout, None, b""

    def close(self):
        if self.sock:
            self.sock.close()
        self.sock, self.buf = None, b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the daemon")
        self.buf += chunk

    def request(self, data):
        """Status of the answer to data (bytes of a whole request); 0 when the connection failed."""
        try:
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.sendall(data)
            while b"\r\n\r\n" not in self.buf:
                self._fill()
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            status = int(lines[0].split()[1])
            hdr = {}
            for ln in lines[1:]:
                k, _, v = ln.partition(b":")
                hdr[k.strip().lower()] = v.strip().lower()
            if b"content-length" in hdr:
                n = int(hdr[b"content-length"])
                while len(self.buf) < n:
                    self._fill()
                self.buf = self.buf[n:]
            elif hdr.get(b"transfer-encoding") == b"chunked":
                while True:
                    while b"\r\n" not in self.buf:
                        self._fill()
                    size, rest = self.buf.split(b"\r\n", 1)
                    n = int(size.split(b";")[0], 16)
                    while len(rest) < n + 2:
                        self._fill()
                        rest = self.buf.split(b"\r\n", 1)[1]
                    self.buf = rest[n + 2:]
                    if n == 0:
                        break
            if hdr.get(b"connection") == b"close" or status == 413:
                self.close()
            return status
        except (OSError, ValueError, IndexError):
            self.close()
            return 0


def hang_up(port, data, cut, timeout):
    """A client that disconnects mid-body: send the first cut bytes of data, then close."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            s.sendall(data[:cut])
        finally:
            s.close()
        return -1
    except OSError:
        return 0


def client(idx, a, port, reqs, schedule, done, results):
    rng = random.Random(a.seed * 1000 + idx)
    counts = collections.Counter()
    slowest = {}
    conn = Conn(port, a.timeout)
    pending = 0
    for kind in schedule:
        data, cut = rng.choice(reqs[kind])
        t = time.monotonic()
        st = conn.request(data) if cut is None else hang_up(port, data, cut, a.timeout)
        t = time.monotonic() - t
        counts[(kind, st)] += 1
        if t > a.max_latency:
            counts[(kind, "slow")] += 1
        if t > slowest.get(kind, 0.0):
            slowest[kind] = t
        pending += 1
        if pending == 200:
            with done.get_lock():
                done.value += pending
            pending = 0
    with done.get_lock():
        done.value += pending
    conn.close()
    results.put((dict(counts), slowest))


# ==== The run ====

def vm_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    raise RuntimeError("no VmRSS in /proc/%d/status" % pid)


def make_store(loupe, root, n):
    for i in range(n):
        hidden = ("32", "64,32", "16")[i % 3]
        subprocess.run([loupe, "train-mlp", "--epochs", "1", "--hidden", hidden, "--seed", str(i + 1),
                        "--threads", "1", "--out", os.path.join(root, "mlp%d" % (i + 1))],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loupe", default=os.path.join(ROOT, "build", "cli", "loupe"), help="the loupe binary")
    ap.add_argument("--requests", type=int, default=1000000, help="requests in all (default 1000000)")
    ap.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    ap.add_argument("--threads", type=int, default=2, help="the daemon's --threads (default 2)")
    ap.add_argument("--store", help="a model store of MLPs (default: train --models small MLPs into a temp dir)")
    ap.add_argument("--models", type=int, default=3, help="MLPs to train when there is no --store (default 3)")
    ap.add_argument("--images", type=int, default=16, help="distinct test images in the mix (default 16)")
    ap.add_argument("--sample-every", type=int, default=0,
                    help="read the daemon's VmRSS every N requests (default: requests/50)")
    ap.add_argument("--warmup", type=int, default=0, help="requests before the RSS baseline (default: requests/10)")
    ap.add_argument("--max-growth", type=float, default=5.0, help="allowed RSS growth after warm-up, %% (default 5)")
    ap.add_argument("--timeout", type=float, default=60.0, help="client socket timeout, s (default 60)")
    ap.add_argument("--max-latency", type=float, default=5.0,
                    help="a request (or a hang-up) that takes longer fails the soak, s (default 5)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the request order (default 0)")
    ap.add_argument("--access-log", default="on", choices=("on", "off"), help="the daemon's --access-log (default on)")
    ap.add_argument("--daemon-env", action="append", default=[], metavar="NAME=VALUE",
                    help="set in the daemon's environment (repeatable), e.g. LOUPE_MLP_KERNELS=avx2")
    a = ap.parse_args()
    every = a.sample_every or max(1, a.requests // 50)
    warmup = a.warmup or a.requests // 10

    tmp = tempfile.mkdtemp(prefix="loupe-soak-")
    store = a.store
    if not store:
        store = os.path.join(tmp, "store")
        os.makedirs(store)
        make_store(a.loupe, store, a.models)
    models = sorted(d for d in os.listdir(store) if os.path.isfile(os.path.join(store, d, "model.json")))
    images, _ = fx.test_set()
    reqs = build_requests(models, images[:a.images])

    rng = random.Random(a.seed)
    kinds = list(KINDS)
    schedule = rng.choices(kinds, weights=[KINDS[k][0] for k in kinds], k=a.requests)
    shares = [schedule[i::a.clients] for i in range(a.clients)]

    d = fx.Daemon(a.loupe, store, "--threads", str(a.threads), "--max-body", str(MAX_BODY), "--drain-grace", "0",
                  "--access-log", a.access_log, env=dict(e.split("=", 1) for e in a.daemon_env))
    pid = d.proc.pid
    print("soak: %s\nsoak: %s, %d cores, load average %s" % (
        " ".join(sys.argv), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), os.cpu_count(),
        " ".join(open("/proc/loadavg").read().split()[:3])))
    print("soak: loupe serve pid %d on port %d, models %s, %d requests from %d clients, daemon threads %d"
          % (pid, d.port, ",".join(models), a.requests, a.clients, a.threads), flush=True)
    done = mp.Value("q", 0)
    results = mp.Queue()
    procs = [mp.Process(target=client, args=(i, a, d.port, reqs, shares[i], done, results))
             for i in range(a.clients)]
    trace = [(0, 0.0, vm_rss_kb(pid))]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    next_at = every
    counts = collections.Counter()
    slowest = collections.defaultdict(float)
    got = 0
    while got < a.clients:
        while got < a.clients and not results.empty():
            c, s = results.get()
            counts.update(c)
            for k, t in s.items():
                slowest[k] = max(slowest[k], t)
            got += 1
        n = done.value
        if (n >= next_at or got == a.clients) and n != trace[-1][0]:
            rss = vm_rss_kb(pid)
            trace.append((n, time.monotonic() - t0, rss))
            print("  %9d requests  %7.1f s  VmRSS %8d kB" % trace[-1], flush=True)
            while next_at <= n:
                next_at += every
        if d.proc.poll() is not None:
            print("soak: the daemon exited %d mid-run" % d.proc.returncode, flush=True)
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.kill()
    rss_end = vm_rss_kb(pid) if d.proc.poll() is None else 0
    rc = d.stop()

    failures = []
    print("\nstatus histogram per kind (status 0: the connection failed; -1: hung up mid-body, no answer read),"
          " the slowest request, and how many took more than %g s" % a.max_latency)
    for kind in kinds:
        row = {st: c for (k, st), c in counts.items() if k == kind and st != "slow"}
        slow = counts.get((kind, "slow"), 0)
        want = -1 if KINDS[kind][1] is None else KINDS[kind][1]
        hist = "  ".join("%d: %d" % (st, c) for st, c in sorted(row.items()))
        print("  %-18s %-24s max %8.3f s  slow %d" % (kind, hist, slowest[kind], slow))
        bad = {st: c for st, c in row.items() if st != want}
        if bad:
            failures.append("%s: unexpected statuses %s (expected %d)" % (kind, bad, want))
        if slow:
            failures.append("%s: %d requests took more than %g s (the slowest %.1f s)"
                            % (kind, slow, a.max_latency, slowest[kind]))
    total = sum(c for (k, st), c in counts.items() if st != "slow")
    if total != a.requests:
        failures.append("%d requests answered of %d" % (total, a.requests))

    base = next((s for s in trace if s[0] >= warmup), trace[-1])
    after = [s[2] for s in trace if s[0] >= base[0]] + ([rss_end] if rss_end else [])
    peak = max(after)
    end = after[-1]
    print("\n%d requests in %.1f s (%.0f/s), %d client processes" % (total, elapsed, total / elapsed, a.clients))
    print("VmRSS: start %d kB, after warm-up (%d requests) %d kB, end %d kB, max after warm-up %d kB, max %d kB"
          % (trace[0][2], base[0], base[2], end, peak, max(s[2] for s in trace)))
    print("growth after warm-up: end %+.2f%%, max %+.2f%% (limit %.1f%%)"
          % (100.0 * (end - base[2]) / base[2], 100.0 * (peak - base[2]) / base[2], a.max_growth))
    if peak > base[2] * (1 + a.max_growth / 100.0):
        failures.append("VmRSS grew from %d kB after warm-up to %d kB" % (base[2], peak))
    if rc != 0:
        failures.append("loupe serve exited %d on SIGTERM" % rc)
    if failures:
        print("\nFAIL\n  " + "\n  ".join(failures))
        print("daemon log kept: " + d.log_path)
        shutil.rmtree(tmp, ignore_errors=True)
        return 1
    os.unlink(d.log_path)
    shutil.rmtree(tmp, ignore_errors=True)
    print("\nOK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
