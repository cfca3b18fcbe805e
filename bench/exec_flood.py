"""Worst case for bench/exec.sh: a flood of decompression-bomb uploads, and
what a health check and a small predict wait meanwhile.

--clients threads of one process POST the bomb PNG to the predict route in a
loop (each on its own keep-alive connection, the next request as soon as the
answer is in); after --settle seconds two measurers, each its own process so
that neither waits for the other's Python, send requests one after another,
--gap-ms apart, for --duration seconds: one GET /healthz, one POST of the
28x28 PNG to the same predict route.
Then the flood is killed (uploads still in flight are abandoned).

Prints one line each, machine-readable (latencies in milliseconds):
  FLOOD_HEALTH n=.. p50=.. p99=.. max=.. errors=..
  FLOOD_PREDICT n=.. p50=.. p99=.. max=.. errors=..
  FLOOD_BOMBS n=.. ok=.. rejected=.. other=.. p50=.. max=..
errors counts answers other than 200 and requests that failed or ran past
--timeout (those count at --timeout in the percentiles).

usage: exec_flood.py --port N --model mlp --bomb FILE --png FILE [--clients 8]
                     [--duration 15] [--settle 1] [--timeout 30] [--gap-ms 0]
"""
import argparse
import http.client
import multiprocessing as mp
import os
import threading
import time


def request(conn, method, path, body, headers):
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    r.read()
    return r.status


def bomb_client(a, body, log_path, lock):
    """One flood connection: the bomb, again and again, until killed."""
    conn = None
    while True:
        t0 = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=a.timeout * 4)
            st = request(conn, "POST", "/v1/models/%s/predict" % a.model, body, {"Content-Type": "image/png"})
        except (OSError, http.client.HTTPException):
            st = 0
            conn = None
            time.sleep(0.05)
        ms = (time.monotonic() - t0) * 1e3
        with lock, open(log_path, "a") as f:
            f.write("%d %.3f\n" % (st, ms))


def flood(a, body, log_path):
    lock = threading.Lock()
    threads = [threading.Thread(target=bomb_client, args=(a, body, log_path, lock), daemon=True)
               for _ in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def measure(a, method, path, body, headers, deadline, out):
    """Back-to-back requests until the deadline; (status, ms) of each into out."""
    conn = None
    res = []
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=a.timeout)
            st = request(conn, method, path, body, headers)
        except (OSError, http.client.HTTPException):
            st = 0
            conn = None
        res.append((st, min((time.monotonic() - t0) * 1e3, a.timeout * 1e3)))
        if a.gap_ms:
            time.sleep(a.gap_ms / 1e3)
    out.put(res)


def pct(xs, q):
    """Nearest-rank percentile of a list (0 when empty)."""
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(-(-q * len(s) // 100)) - 1))]


def summary(tag, res):
    lat = [ms for _, ms in res]
    err = sum(1 for st, _ in res if st != 200)
    print("%s n=%d p50=%.2f p99=%.2f max=%.2f errors=%d"
          % (tag, len(res), pct(lat, 50), pct(lat, 99), max(lat, default=0), err))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True, help="the daemon's port on 127.0.0.1")
    ap.add_argument("--model", default="mlp", help="model of the predict route (default mlp)")
    ap.add_argument("--bomb", required=True, help="the bomb PNG")
    ap.add_argument("--png", required=True, help="the small PNG the predict measurer sends")
    ap.add_argument("--clients", type=int, default=8, help="concurrent bomb senders (default 8)")
    ap.add_argument("--duration", type=float, default=15, help="seconds of measuring (default 15)")
    ap.add_argument("--settle", type=float, default=1, help="seconds of flood before measuring (default 1)")
    ap.add_argument("--timeout", type=float, default=30, help="a measured request's limit in seconds (default 30)")
    ap.add_argument("--gap-ms", type=float, default=0, help="pause between a measurer's requests (default 0)")
    ap.add_argument("--log", default=None, help="file for the bombs' status and ms (default: a temp file)")
    a = ap.parse_args()

    with open(a.bomb, "rb") as f:
        bomb = f.read()
    with open(a.png, "rb") as f:
        small = f.read()
    log_path = a.log or "/tmp/exec-flood-%d.log" % os.getpid()
    open(log_path, "w").close()

    ctx = mp.get_context("fork")
    flooder = ctx.Process(target=flood, args=(a, bomb, log_path))
    flooder.start()
    time.sleep(a.settle)
    deadline = time.monotonic() + a.duration
    q_health, q_predict = ctx.Queue(), ctx.Queue()
    m_health = ctx.Process(target=measure, args=(a, "GET", "/healthz", None, {}, deadline, q_health))
    m_predict = ctx.Process(target=measure, args=(a, "POST", "/v1/models/%s/predict" % a.model, small,
                                                  {"Content-Type": "image/png"}, deadline, q_predict))
    m_health.start()
    m_predict.start()
    health, predict = q_health.get(), q_predict.get()
    m_health.join()
    m_predict.join()
    flooder.kill()
    flooder.join()

    summary("FLOOD_HEALTH", health)
    summary("FLOOD_PREDICT", predict)
    with open(log_path) as f:
        bombs = [(int(s), float(ms)) for s, ms in (ln.split() for ln in f if ln.strip())]
    if not a.log:
        os.unlink(log_path)
    lat = [ms for _, ms in bombs]
    print("FLOOD_BOMBS n=%d ok=%d rejected=%d other=%d p50=%.1f max=%.1f" % (
        len(bombs), sum(st == 200 for st, _ in bombs), sum(st == 429 for st, _ in bombs),
        sum(st not in (200, 429) for st, _ in bombs), pct(lat, 50), max(lat, default=0)))


if __name__ == "__main__":
    main()
