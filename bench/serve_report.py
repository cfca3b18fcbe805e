"""Print bench/serve.sh's table from the files its runs left in a folder.

The folder holds, per run, wrk's BENCH line (bench/serve_post.lua), how long
the server's threads ran and waited for a CPU meanwhile, wrk's CPU time, Loupe's /metrics before and
after its measured run, and the request count and VmRSS after each memory run.

usage: serve_report.py DIR [--connections 64] [--duration 15] [--cpu NAME] [--load-start "L1 L5 L15"]
"""
import argparse
import os
import re


def read(folder, name):
    with open(os.path.join(folder, name)) as f:
        return f.read()


def fields(text, tag):
    """The key=value numbers of the first line starting with tag ({} when none)."""
    for line in text.splitlines():
        if line.startswith(tag + " "):
            return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)}
    return {}


def errors(b):
    return b.get("status", 0) + b.get("connect", 0) + b.get("read", 0) + b.get("write", 0) + b.get("timeout", 0)


def timed_run(folder, name):
    """wrk's figures for one timed run, with the server's CPU microseconds per
    request and the seconds its threads ran and waited on a run queue."""
    text = read(folder, name)
    d, sched = fields(text, "BENCH"), fields(text, "SCHED")
    d["rps"] = d["requests"] / (d["duration_us"] / 1e6)
    d["socket"] = d["connect"] + d["read"] + d["write"] + d["timeout"]
    d["errors"] = errors(d)
    d["server_cpu_us"] = sched["run_ns"] / d["requests"] / 1e3
    d["server_wait_s"] = sched["wait_ns"] / 1e9
    d["server_run_s"] = sched["run_ns"] / 1e9
    m = re.search(r"^WRKCPU ([\d.]+) ([\d.]+)", text, re.M)
    d["wrk_cpu_us"] = (float(m[1]) + float(m[2])) / d["requests"] * 1e6
    return d


def served_rss(folder, name):
    text = read(folder, name)
    m = re.search(r"^SERVED (\d+) RSS (\d+)", text, re.M)
    return int(m[1]), int(m[2]), errors(fields(text, "BENCH"))


def histogram(text):
    """Loupe's predict request-duration histogram: ({le: cumulative count}, sum of seconds)."""
    route = r'route="/v1/models/\{m\}/predict"'
    h = {m[1]: int(m[2]) for m in
         re.finditer(r"^loupe_http_request_duration_seconds_bucket\{" + route + r',le="([^"]+)"\} (\d+)', text, re.M)}
    m = re.search(r"^loupe_http_request_duration_seconds_sum\{" + route + r"\} (\S+)", text, re.M)
    return h, float(m[1]) if m else 0.0


def server_view(folder):
    """Loupe's own timing of the measured run (request headers in to response
    queued), from the histogram's difference: tells handling from waiting."""
    (hb, sb), (ha, sa) = histogram(read(folder, "metrics-before")), histogram(read(folder, "metrics-after"))
    n = ha.get("+Inf", 0) - hb.get("+Inf", 0)
    if n <= 0:
        return None

    def bound(q):
        for le in sorted((k for k in ha if k != "+Inf"), key=float):
            if ha[le] - hb.get(le, 0) >= q * n:
                return f"<= {float(le) * 1e3:g} ms"
        return "above the largest bucket"
    return n, (sa - sb) / n * 1e3, bound(0.5), bound(0.99)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="the folder of serve.sh's run files")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (for the heading)")
    ap.add_argument("--duration", type=int, default=15, help="seconds of each timed run (for the heading)")
    ap.add_argument("--cpu", default="", help="CPU model name (for the heading)")
    ap.add_argument("--load-start", default="", help="load average before the run (for the heading)")
    a = ap.parse_args()
    ncpu = os.cpu_count()

    lo, pe = timed_run(a.dir, "loupe.out"), timed_run(a.dir, "peer.out")
    load = {k: read(a.dir, f"load-{k}").split(None, 1)[1].strip() for k in ("loupe", "peer")}
    print(f"machine: {ncpu} cores, {a.cpu}; load average {a.load_start} before the run")
    print(f"{a.connections} keep-alive connections, 2 wrk threads, {a.duration} s each, "
          f"POST a 28x28 PNG to /v1/models/mlp/predict")
    print()
    print(f"{'server':<31}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'non-2xx':>8}{'socket':>7}"
          f"{'CPU us/req':>11}{'wrk us/req':>11}  load avg at start")
    for label, d, key in (("loupe serve (C)", lo, "loupe"), ("FastAPI + uvicorn --workers 2", pe, "peer")):
        print(f"{label:<31}{d['rps']:>8,.0f}{d['p50_us'] / 1e3:>8.2f}{d['p99_us'] / 1e3:>8.2f}"
              f"{d['max_us'] / 1e3:>8.1f}{d['status']:>8.0f}{d['socket']:>7.0f}{d['server_cpu_us']:>11.1f}"
              f"{d['wrk_cpu_us']:>11.1f}  {load[key]}")
    ratio = lo["rps"] / pe["rps"] if pe["rps"] else float("inf")
    print(f"loupe / peer: {ratio:.1f}x the requests/s; the peer spends "
          f"{pe['server_cpu_us'] / lo['server_cpu_us']:.1f}x the server CPU per request")
    view = server_view(a.dir)
    if view:
        n, mean, p50, p99 = view
        print(f"loupe's own timing of those {n:,} requests: mean {mean:.3f} ms, p50 {p50}, p99 {p99}")
    for label, d in (("loupe", lo), ("the peer", pe)):
        print(f"{label}'s threads ran {d['server_run_s']:.1f} s and waited {d['server_wait_s']:.1f} s for a CPU "
              f"in the {d['duration_us'] / 1e6:.0f} s run")
    both = lo["server_cpu_us"] + lo["wrk_cpu_us"]
    print(f"loupe + wrk CPU per request: {both:.1f} us, about {ncpu * 1e6 / both:,.0f} requests/s "
          f"if the two had the {ncpu} cores to themselves (an estimate, not a measurement)")

    ws, wr, we = served_rss(a.dir, "wrk-warm.out")
    ts, tr, te = served_rss(a.dir, "wrk-total.out")
    change = (tr - wr) / wr * 100
    print()
    print(f"loupe RSS after {ws:>9,} requests (warm-up): {wr:>7,} kB")
    print(f"loupe RSS after {ts:>9,} requests:           {tr:>7,} kB  ({change:+.1f}%)")
    print(f"errors during the memory runs: {we + te:.0f}")

    checks = [("requests/s >= 15,000", lo["rps"] >= 15000),
              ("p99 < 10 ms", lo["p99_us"] < 10000),
              ("10x the peer's requests/s", ratio >= 10),
              ("zero errors", lo["errors"] == 0 and we + te == 0),
              ("RSS within 5% between 100k and 1M requests", abs(change) <= 5)]
    print()
    for what, ok in checks:
        print(f"  {'ok  ' if ok else 'MISS'}  {what}")


if __name__ == "__main__":
    main()
