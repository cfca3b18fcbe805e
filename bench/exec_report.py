"""Print bench/exec.sh's report from the files its runs left in a folder, and
write it to --out.

The folder holds header.txt (machine, builds, BLAS, models), manifest.tsv (one
line per wrk run: id, phase, round, build, model, config, load average, the
most images per libtorch call when the daemon's log names one), per
run ID.wrk (wrk's output with bench/serve_post.lua's BENCH line) and
ID.before / ID.after (/metrics around the timed run), flood-new.out /
flood-base.out (bench/exec_flood.py's lines), passes.out and passes-malloc.out
(bench/exec_passes.py's lines, the second with glibc's mmap threshold at
32 MiB), and crashes.tsv (a daemon that died: its run, exit status and saved
log).

Exit status 1 when any wrk answer was not 2xx, a socket error happened, or a
measurer of the flood got anything but 200 from this tree's daemon (the
parent's may time out: that is what is measured): the figures are printed anyway.

usage: exec_report.py DIR --out FILE
       exec_report.py DIR --pick-max-batch
"""
import argparse
import os
import re
import statistics

from serve_report import fields  # wrk's summary line, as serve.sh writes it too

# Targets of the execution-core change.
VGG_SPEEDUP = 2.0   # batching's req/s over --max-batch 1, with p99 no worse
HEALTH_P99_MS = 50  # /healthz p99 under the bomb flood, this tree
PREDICT_P99_MS = 100  # 28x28 predict p99 under the bomb flood, this tree
SWEEP_SLACK = 0.05  # sweep: configurations within 5% of the best req/s compete on p99


def read(folder, name):
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return f.read()


def metric(text, name, labels):
    m = re.search(r"^" + re.escape(name + "{" + labels + "}") + r" (\S+)$", text, re.M)
    return float(m[1]) if m else None


def delta_mean(before, after, name, labels):
    """(sum delta) / (count delta) of a histogram over the timed run, or None."""
    vals = [metric(t, name + suffix, labels) for t in (before, after) for suffix in ("_sum", "_count")]
    if None in vals or vals[3] - vals[1] <= 0:
        return None
    return (vals[2] - vals[0]) / (vals[3] - vals[1])


def load_runs(folder):
    runs = []
    for line in read(folder, "manifest.tsv").splitlines():
        rid, phase, rnd, build, model, config, load, cap = (line.split("\t") + ["-"])[:8]
        b = fields(read(folder, rid + ".wrk"), "BENCH")
        before, after = read(folder, rid + ".before"), read(folder, rid + ".after")
        r = {"id": rid, "phase": phase, "round": int(rnd), "build": build, "model": model, "config": config,
             "load": load.split()[0], "cap": cap, "ok": bool(b)}
        if b:
            r.update(rps=b["requests"] / (b["duration_us"] / 1e6), p50=b["p50_us"] / 1e3, p99=b["p99_us"] / 1e3,
                     max=b["max_us"] / 1e3, non2xx=int(b["status"]),
                     socket=int(b["connect"] + b["read"] + b["write"] + b["timeout"]), requests=int(b["requests"]))
        r["batch"] = delta_mean(before, after, "loupe_batch_size", 'model="%s"' % model)
        w = delta_mean(before, after, "loupe_queue_wait_seconds", 'lane="main"')
        r["qwait"] = w * 1e3 if w is not None else None
        runs.append(r)
    return runs


def opt(v, fmt):
    return "-" if v is None else fmt % v


def table(header, rows, align=None):
    """A plain-text table, columns padded; numbers right-aligned."""
    cols = list(zip(header, *rows))
    widths = [max(len(str(c)) for c in col) for col in cols]
    align = align or ["<"] + [">"] * (len(header) - 1)
    out = []
    for row in [header] + rows:
        out.append("  ".join("{:{}{}}".format(str(c), a, w) for c, a, w in zip(row, align, widths)).rstrip())
        if row is header:
            out.append("  ".join("-" * w for w in widths))
    return out


def run_row(r):
    label = "%s, %s" % ("this tree" if r["build"] == "new" else "parent", r["config"])
    head = [str(r["round"])]
    if not r["ok"]:
        return head + [r["model"], label, "no result"] + [""] * 7
    return head + [r["model"], label, "{:,.0f}".format(r["rps"]), "%.2f" % r["p50"], "%.2f" % r["p99"],
                   "%d/%d" % (r["non2xx"], r["socket"]), opt(r["batch"], "%.2f"), r["cap"], opt(r["qwait"], "%.3f"),
                   r["load"]]


def find(runs, rnd, build, model, config):
    for r in runs:
        if r["phase"] == "main" and r["round"] == rnd and r["build"] == build and r["model"] == model \
                and r["config"] == config and r["ok"]:
            return r
    return None


def sweep_runs(runs):
    """The sweep's runs, each with its --max-batch (mb) and --batch-delay-us (delay)."""
    out = []
    for r in runs:
        if r["phase"] == "sweep" and r["ok"]:
            mb, delay = re.match(r"max-batch (\d+) delay (\d+)", r["config"]).groups()
            out.append(dict(r, mb=int(mb), delay=int(delay)))
    return out


def pick(cands, key, default):
    """Of the runs within SWEEP_SLACK of the best req/s, the one with the lowest
    p99; the default's run when it is among them with a p99 within SWEEP_SLACK
    of that (a difference this small is noise). Its value of key."""
    if not cands:
        return default
    best = max(c["rps"] for c in cands)
    close = [c for c in cands if c["rps"] >= (1 - SWEEP_SLACK) * best]
    low = min(close, key=lambda c: c["p99"])
    for c in close:
        if c[key] == default and c["p99"] <= (1 + SWEEP_SLACK) * low["p99"]:
            return default
    return low[key]


def pick_max_batch(sweep):
    """The best --max-batch of the sweep's runs at delay 0 (1, batching off, is the baseline, not a candidate)."""
    return pick([r for r in sweep if r["delay"] == 0 and r["mb"] > 1], "mb", 32)


def yes(ok):
    return "met" if ok else "MISSED"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="the folder of exec.sh's run files")
    ap.add_argument("--out", help="file to write the report to")
    ap.add_argument("--pick-max-batch", action="store_true",
                    help="only print the best --max-batch of the sweep's runs so far (for exec.sh)")
    a = ap.parse_args()

    runs = load_runs(a.dir)
    if a.pick_max_batch:
        print(pick_max_batch(sweep_runs(runs)))
        return 0
    if not a.out:
        ap.error("--out is required")
    lines = ["Loupe execution core: lanes and dynamic batching (bench/exec.sh)", ""]
    lines += read(a.dir, "header.txt").rstrip().splitlines()
    failures = []
    for r in runs:
        if not r["ok"]:
            failures.append("%s: wrk gave no result" % r["id"])
        elif r["non2xx"] or r["socket"]:
            failures.append("%s: %d non-2xx answers, %d socket errors" % (r["id"], r["non2xx"], r["socket"]))

    # ==== Throughput ====
    main_runs = [r for r in runs if r["phase"] == "main"]
    hdr = ["round", "model", "daemon", "req/s", "p50 ms", "p99 ms", "non-2xx/socket err", "mean batch",
           "pass cap", "queue wait ms", "load"]
    lines += ["", "== Throughput: wrk, POST predict, one fresh daemon per run =="]
    lines += table(hdr, [run_row(r) for r in sorted(main_runs, key=lambda r: (r["round"], r["model"], r["id"]))])
    lines += ["(mean batch: images per forward pass, loupe_batch_size _sum/_count over the timed run; pass cap: "
              "the most images per libtorch call, as the warm-up chose it (daemon log); queue wait: mean of "
              "loupe_queue_wait_seconds on the main lane; the parent has neither)"]

    rounds = sorted({r["round"] for r in main_runs})
    vgg_tp, vgg_p99, mlp_tp, mlp_base_p99 = [], [], [], []
    rat = []
    for n in rounds:
        v1, vd = find(runs, n, "new", "vgg16-w25", "max-batch 1"), find(runs, n, "new", "vgg16-w25", "defaults")
        m1, md = find(runs, n, "new", "mlp", "max-batch 1"), find(runs, n, "new", "mlp", "defaults")
        mb = find(runs, n, "base", "mlp", "defaults")
        row = [str(n)]
        if v1 and vd:
            vgg_tp.append(vd["rps"] / v1["rps"])
            vgg_p99.append(vd["p99"] / v1["p99"])
            row += ["%.2fx" % vgg_tp[-1], "%.2f" % vgg_p99[-1]]
        else:
            row += ["-", "-"]
        if md and mb:
            mlp_tp.append(md["rps"] / mb["rps"])
            mlp_base_p99.append(md["p99"] / mb["p99"])
            row += ["%.2fx" % mlp_tp[-1], "%.2f" % mlp_base_p99[-1]]
        else:
            row += ["-", "-"]
        row += ["%.2fx" % (md["rps"] / m1["rps"]) if md and m1 else "-"]
        rat.append(row)
    if len(rounds) > 1:
        def mean(xs):
            return "%.2f" % statistics.mean(xs) if xs else "-"
        rat.append(["mean", mean(vgg_tp) + "x", mean(vgg_p99), mean(mlp_tp) + "x", mean(mlp_base_p99), ""])
    lines += ["", "Ratios (this tree's defaults over ...):"]
    lines += table(["round", "VGG req/s vs max-batch 1", "VGG p99 vs max-batch 1", "MLP req/s vs parent",
                    "MLP p99 vs parent", "MLP req/s vs max-batch 1"], rat)

    # ==== Worst case ====
    lines += ["", "== Worst case: 8 clients POST a %s-byte PNG declaring 39,999,999 x 1 pixels to the MLP in a loop =="
              % (re.search(r"bomb.png (\d+)", read(a.dir, "header.txt")) or ["", "?"])[1]]
    frow, flood = [], {}
    for build in ("new", "base"):
        text = read(a.dir, "flood-%s.out" % build)
        h, p, b = fields(text, "FLOOD_HEALTH"), fields(text, "FLOOD_PREDICT"), fields(text, "FLOOD_BOMBS")
        if not h:
            failures.append("flood on the %s build: no result" % build)
            continue
        flood[build] = (h, p)
        load = (re.search(r"^LOAD (\S+)", text, re.M) or ["", "?"])[1]
        frow.append(["this tree" if build == "new" else "parent", "%d" % h["n"], "%.2f" % h["p50"], "%.2f" % h["p99"],
                     "%.1f" % h["max"], "%d" % p["n"], "%.2f" % p["p50"], "%.2f" % p["p99"], "%.1f" % p["max"],
                     "%d" % (h["errors"] + p["errors"]),
                     "%d (%d ok, %d 429)" % (b["n"], b["ok"], b["rejected"]), load])
        if build == "new" and (h["errors"] or p["errors"]):
            failures.append("flood on the %s build: %d /healthz and %d predict answers were not 200"
                            % (build, h["errors"], p["errors"]))
    lines += table(["daemon", "healthz n", "p50 ms", "p99 ms", "max ms", "predict n", "p50 ms", "p99 ms", "max ms",
                    "not 200", "bombs answered", "load"], frow)
    lines += ["(healthz and predict: two measurer processes, each request after the last one's answer and the gap "
              "in the header; bombs answered: uploads answered from the flood's start to its end)"]

    # ==== Targets ====
    lines += ["", "== Targets =="]
    if vgg_tp:
        lines.append("VGG16-w0.25 batching >= %.0fx the req/s of --max-batch 1: %s (%s); p99 no worse: %s (%s)" % (
            VGG_SPEEDUP, ", ".join("%.2fx" % x for x in vgg_tp), yes(min(vgg_tp) >= VGG_SPEEDUP),
            ", ".join("%.2f" % x for x in vgg_p99), yes(max(vgg_p99) <= 1.0)))
    if mlp_tp:
        lines.append("MLP, this tree's defaults no slower than the parent: %s the parent's req/s (%s)" % (
            ", ".join("%.2fx" % x for x in mlp_tp), yes(min(mlp_tp) >= 1.0)))
    if "new" in flood:
        h, p = flood["new"]
        lines.append("under the flood, /healthz p99 < %d ms: %.2f ms (%s); predict p99 < %d ms: %.2f ms (%s)" % (
            HEALTH_P99_MS, h["p99"], yes(h["p99"] < HEALTH_P99_MS), PREDICT_P99_MS, p["p99"],
            yes(p["p99"] < PREDICT_P99_MS)))
    if "base" in flood:
        h, p = flood["base"]
        lines.append("  (the parent under the same flood: /healthz p99 %.2f ms, predict p99 %.2f ms)"
                     % (h["p99"], p["p99"]))

    # ==== Sweep ====
    passes = [fields(ln, "PASS") for ln in read(a.dir, "passes.out").splitlines()
              if ln.startswith("PASS ")]
    malloc = {p["batch"]: p for p in (fields(ln, "PASS") for ln in read(a.dir, "passes-malloc.out").splitlines()
                                      if ln.startswith("PASS "))}
    if passes:
        lines += ["", "== The VGG's forward pass alone "
                  "(torch.jit.load of the same model.ts, 1 thread; best of 3 turns) =="]
        lines += table(["batch", "ms per pass", "ms per image", "median turn, ms/image", "images/s on one core",
                        "ms/image, mmap threshold 32 MiB"],
                       [["%d" % p["batch"], "%.2f" % p["ms_per_pass"], "%.3f" % p["ms_per_image"],
                         "%.3f" % p.get("median_ms_per_image", 0), "{:,.0f}".format(1e3 / p["ms_per_image"]),
                         opt(malloc.get(p["batch"], {}).get("ms_per_image"), "%.3f")]
                        for p in passes], [">"] * 6)
        lines += ["(last column: the same with MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=134217728, "
                  "glibc's malloc then reuses heap memory for large tensors instead of mapping fresh pages each pass)"]
    sweep = sweep_runs(runs)
    if sweep:
        lines += ["", "== Sweep: VGG16-w0.25, this tree, one short run each =="]
        srows = [["%d" % r["mb"], "%d" % r["delay"], "{:,.0f}".format(r["rps"]), "%.2f" % r["p50"], "%.2f" % r["p99"],
                  opt(r["batch"], "%.2f"), r["cap"], "%d/%d" % (r["non2xx"], r["socket"]), r["load"]] for r in sweep]
        lines += table(["--max-batch", "--batch-delay-us", "req/s", "p50 ms", "p99 ms", "mean batch", "pass cap",
                        "non-2xx/socket err", "load"], srows, [">"] * 9)
        mb = pick_max_batch(sweep)
        delay = pick([r for r in sweep if r["mb"] == mb], "delay", 0)
        lines.append("suggested defaults: --max-batch %d --batch-delay-us %d (%s); rule: of the runs at delay 0, then "
                     "of the delays at that --max-batch, those within %d%% of the best req/s, the lowest p99 "
                     "(the current default when its p99 is as low within the same margin)" % (
                         mb, delay, "the current defaults" if (mb, delay) == (32, 0) else "the current: 32 and 0",
                         SWEEP_SLACK * 100))
        one = [r for r in sweep if r["mb"] == 1]
        best = [r for r in sweep if (r["mb"], r["delay"]) == (mb, delay)]
        if one and best:
            lines.append("at the suggested defaults, against --max-batch 1 in the same sweep: %.2fx the req/s, "
                         "p99 %.2f of it" % (best[0]["rps"] / one[0]["rps"], best[0]["p99"] / one[0]["p99"]))

    for line in read(a.dir, "crashes.tsv").splitlines():
        name, status, log = line.split("\t")
        failures.append("the daemon of %s died (exit status %s%s); its log: %s" % (
            name, status, ", SIGSEGV" if status == "139" else "", log))

    lines += [""]
    if failures:
        lines += ["FAILED:"] + ["  " + f for f in failures]
    else:
        lines += ["every wrk answer was 2xx, no socket errors; every measured flood request to this tree got 200"]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    with open(a.out, "w") as f:
        f.write(text)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
