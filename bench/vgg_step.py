#!/usr/bin/python3
"""Where a training step of the default VGG recipe spends its time, per ISA level and setting.

Times optimisation steps of the default recipe's network (VGG16-BN, width 0.25,
32x32 inputs, one channel, batch 128, SGD with Nesterov momentum, label
smoothing) on random batches, each configuration in a process of its own (oneDNN
and ATen read their ISA limits once, at load):
  isa       native (what this CPU has) or avx2: ONEDNN_MAX_CPU_ISA=AVX2 and
            ATEN_CPU_CAPABILITY=avx2, an AVX2 CPU's kernels even on an AVX-512 one
  heap      keep: train_vgg.py's keep_heap() (glibc keeps freed activations);
            default: glibc's own settings (they go back to the kernel and every
            step page-faults them in again)
  layout    channels-last (NHWC, the recipe's) or contiguous (NCHW)
  batch     64, 128 (the recipe's) or 256
It prints ms a step and seconds an epoch of 54,000 images (steps alone; the
validation pass adds about 2 s), and for the recipe's own settings the top
operators of a profiled step. One turn per configuration, --rounds rounds, the
best of each configuration's turns.

usage: bench/vgg_step.py [--steps 20] [--rounds 2] [--quick]
"""
import argparse
import json
import os
import subprocess
import sys
import time

from mlp_train import cpu_levels, cpu_model

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINING = os.path.join(HERE, "..", "training")


def child(a):
    """Time a.steps steps of one configuration; print a JSON line."""
    sys.path.insert(0, TRAINING)
    import torch
    from torch import nn
    import train_vgg
    from vgg import VGG
    if a.heap == "keep":
        train_vgg.keep_heap()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.manual_seed(0)
    cl = a.layout == "channels-last"
    m = VGG({"depth": 16, "width": 0.25, "batch_norm": True, "head": "compact", "dropout": 0.0,
             "in_channels": 1, "num_classes": 10}, inplace=True)
    if cl:
        m = m.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(a.batch, 1, 32, 32)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (a.batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(m(x), y).backward()
        opt.step()

    for _ in range(3):
        step()
    table = None
    if a.profile:
        with torch.autograd.profiler.profile() as p:
            for _ in range(3):
                step()
        table = p.key_averages().table(sort_by="self_cpu_time_total", row_limit=8)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    dt = (time.perf_counter() - t0) / a.steps
    print("RESULT " + json.dumps({"ms": dt * 1e3, "table": table}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps a turn (default 20)")
    ap.add_argument("--rounds", type=int, default=2, help="turns per configuration (default 2)")
    ap.add_argument("--quick", action="store_true", help="only the recipe's settings and the heap, both ISAs")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--heap", default="keep", help=argparse.SUPPRESS)
    ap.add_argument("--layout", default="channels-last", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a)
        return
    levels = cpu_levels()
    isas = ["native", "avx2"] if "avx2" in levels else ["native"]
    base = {"heap": "keep", "layout": "channels-last", "batch": 128}
    configs = []
    for isa in isas:
        configs.append(dict(base, isa=isa))
        configs.append(dict(base, isa=isa, heap="default"))
        if not a.quick:
            configs.append(dict(base, isa=isa, layout="contiguous"))
            configs.append(dict(base, isa=isa, batch=64))
            configs.append(dict(base, isa=isa, batch=256))
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, AVX-512 {'yes' if 'avx512' in levels else 'no'}; "
          f"load average {' '.join(open('/proc/loadavg').read().split()[:3])}")
    best, tables = {}, {}
    for r in range(a.rounds):
        for c in configs:
            env = dict(os.environ)
            if c["isa"] == "avx2":
                env.update(ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2", OPENBLAS_CORETYPE="Haswell")
            key = (c["isa"], c["heap"], c["layout"], c["batch"])
            prof = r == 0 and c["heap"] == "keep" and c["layout"] == "channels-last" and c["batch"] == 128
            cmd = [sys.executable, __file__, "--child", "--steps", str(a.steps), "--heap", c["heap"],
                   "--layout", c["layout"], "--batch", str(c["batch"])] + (["--profile"] if prof else [])
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            if out.returncode or not line:
                sys.exit(f"vgg_step.py: {key} failed:\n{out.stdout}{out.stderr}")
            res = json.loads(line[0][7:])
            best[key] = min(best.get(key, float("inf")), res["ms"])
            if res["table"]:
                tables[c["isa"]] = res["table"]
    print(f"\n{'isa':<7} {'heap':<8} {'layout':<14} {'batch':>5} {'ms/step':>8} {'s/epoch':>8}")
    for key, ms in best.items():
        isa, heap, layout, batch = key
        print(f"{isa:<7} {heap:<8} {layout:<14} {batch:>5} {ms:8.0f} {ms / 1e3 * 54000 / batch:8.1f}")
    for isa, t in tables.items():
        print(f"\ntop operators of a step, {isa}, the recipe's settings (3 steps):\n{t}")


if __name__ == "__main__":
    main()
