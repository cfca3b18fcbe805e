"""The forward pass alone, by batch size: what dynamic batching can gain on a
TorchScript model on this CPU. Loads MODEL_DIR/model.ts with one intra-op thread
(the daemon's --torch-threads default), warms each batch size of random input
at the model's input shape, then times the sizes in turn, --seconds each, for
--rounds rounds (a burst of other tenants' load then hits one turn, not one
size), and prints one machine-readable line per size, the best and the median
turn (milliseconds):
  PASS batch=N ms_per_pass=.. ms_per_image=.. median_ms_per_image=..

usage: exec_passes.py MODEL_DIR [--sizes 1,2,4,8,12,16,32,64] [--seconds 0.3] [--rounds 3]
"""
import argparse
import json
import os
import statistics
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a model folder with model.ts and model.json")
    ap.add_argument("--sizes", default="1,2,4,8,12,16,32,64", help="batch sizes, comma-separated")
    ap.add_argument("--seconds", type=float, default=0.3, help="timed seconds per size and round (default 0.3)")
    ap.add_argument("--rounds", type=int, default=3, help="turns of every size (default 3)")
    a = ap.parse_args()

    import torch
    torch.set_num_threads(1)
    with open(os.path.join(a.model, "model.json")) as f:
        inp = json.load(f)["input"]
    m = torch.jit.load(os.path.join(a.model, "model.ts"))
    m.eval()
    sizes = [int(s) for s in a.sizes.split(",")]
    xs = {n: torch.randn(n, inp["channels"], inp["height"], inp["width"]) for n in sizes}
    turns = {n: [] for n in sizes}
    with torch.no_grad():
        for n in sizes:
            for _ in range(3):
                m(xs[n])
        for _ in range(a.rounds):
            for n in sizes:
                k, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < a.seconds or k < 2:
                    m(xs[n])
                    k += 1
                turns[n].append((time.perf_counter() - t0) / k * 1e3)
    for n in sizes:
        best, med = min(turns[n]), statistics.median(turns[n])
        print("PASS batch=%d ms_per_pass=%.3f ms_per_image=%.3f median_ms_per_image=%.3f"
              % (n, best, best / n, med / n))


if __name__ == "__main__":
    main()
