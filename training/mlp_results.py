#!/usr/bin/python3
"""Run the MLP accuracy experiments of docs/results.md and print its tables.

Two experiments, each a set of `loupe train-mlp` runs (finished runs are reused):
  seeds  the seed's recipe (relu, 100 epochs, lr 0.1, batch 32, hidden
         256,128,64,32) on the default split, seeds 1, 2, 3: mean test accuracy
  grid   sigmoid, tanh, relu, linear on --split seed, 100 epochs, checkpoints at
         50 and 100, beside the seed report's own table; linear also with
         --keep-going, as the seed's loop ran
usage: training/mlp_results.py [--loupe build/cli/loupe] [--out reports/mlp-results] [--only seeds|grid]
"""
import argparse
import json
import os
import subprocess
import sys
import time

# The seed report's own table, from the one file it was transcribed into.
_SEED = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "seed_results.json")))["mlp"]
SEED_TABLE = {a: (_SEED["mine_50"][a], _SEED["mine_100"][a]) for a in ("sigmoid", "tanh", "relu", "linear")}


def train(loupe, out, *args):
    if os.path.isfile(os.path.join(out, "metrics.json")):
        return
    t0 = time.time()
    p = subprocess.run([loupe, "train-mlp", "--out", out, "--quiet", *args], stderr=subprocess.PIPE, text=True)
    if p.returncode not in (0, 3):
        sys.exit(f"{out}: train-mlp failed:\n{p.stderr}")
    print(f"  {out}: {time.time() - t0:.0f} s", file=sys.stderr)


def acc(d):
    with open(os.path.join(d, "metrics.json")) as f:
        return 100 * json.load(f)["test_accuracy"]


def history(d):
    with open(os.path.join(d, "history.json")) as f:
        return json.load(f)


def seeds(loupe, root):
    print("| seed | weights kept | kept epoch | test acc, kept weights | test acc, epoch 50 | test acc, epoch 100 |")
    print("|---|---|---|---|---|---|")
    means = {}
    for variant, extra in (("default (weight average from epoch 51 as a candidate)", []),
                           ("--average-from 0 (best single epoch)", ["--average-from", "0"])):
        rows = []
        for seed in (1, 2, 3):
            out = os.path.join(root, f"relu-seed{seed}" + ("-noavg" if extra else ""))
            train(loupe, out, "--epochs", "100", "--seed", str(seed), "--checkpoint-at", "50,100", *extra)
            h = history(out)
            rows.append((seed, h["kept"]["weights"] if "kept" in h else "epoch", h["kept_epoch"], acc(out),
                         acc(os.path.join(out, "checkpoints/epoch-50")), acc(os.path.join(out, "checkpoints/epoch-100"))))
        for s, kind, ke, a, a50, a100 in rows:
            print(f"| {s} | {kind} | {ke} | {a:.2f}% | {a50:.2f}% | {a100:.2f}% |")
        mean = lambda i: sum(r[i] for r in rows) / len(rows)  # noqa: E731
        print(f"| **mean**, {variant} | | | **{mean(3):.2f}%** | {mean(4):.2f}% | {mean(5):.2f}% |")
        means[variant] = mean(3)
    return means


def grid(loupe, root):
    print("| activation | Loupe 50 epochs | Loupe 100 epochs | seed 50 epochs | seed 100 epochs | note |")
    print("|---|---|---|---|---|---|")
    for act in ("sigmoid", "tanh", "relu", "linear"):
        variants = [("", [])] + ([(" --keep-going", ["--keep-going"])] if act == "linear" else [])
        for label, extra in variants:
            out = os.path.join(root, f"seed-split-{act}{'-keep-going' if extra else ''}")
            train(loupe, out, "--split", "seed", "--activation", act, "--epochs", "100",
                  "--checkpoint-at", "50,100", *extra)
            h = history(out)
            cells = []
            for e in (50, 100):
                ck = os.path.join(out, f"checkpoints/epoch-{e}")
                cells.append(f"{acc(ck):.2f}%" if os.path.isdir(ck) else "—")
            note = ""
            if h["events"]:
                ev = h["events"][0]
                note = f"stopped: diverged at epoch {ev['epoch']}, batch {ev.get('batch', '?')}; kept epoch {h['kept_epoch']} ({acc(out):.2f}%)"
            elif extra:
                bad = [e["epoch"] for e in h["epochs"] if e["train_loss"] is None]
                note = f"trained on through NaN from epoch {bad[0]}" if bad else "no divergence"
            s50, s100 = SEED_TABLE[act]
            print(f"| {act}{label} | {cells[0]} | {cells[1]} | {s50:.2f}% | {s100:.2f}% | {note} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loupe", default="build/cli/loupe", help="the loupe binary")
    ap.add_argument("--out", default="reports/mlp-results", help="where the model folders go")
    ap.add_argument("--only", choices=("seeds", "grid"), help="run one experiment")
    args = ap.parse_args()
    if args.only in (None, "seeds"):
        seeds(args.loupe, args.out)
        print()
    if args.only in (None, "grid"):
        grid(args.loupe, args.out)


if __name__ == "__main__":
    main()
