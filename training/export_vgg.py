#!/usr/bin/env python3
"""Export a VGG checkpoint to TorchScript with this machine's torch.

Usage: export_vgg.py CHECKPOINT OUT_DIR

Rebuilds the module from the checkpoint's config (training/vgg.py), loads its
state_dict, scripts it (or traces it, --trace) with the torch installed here
and writes OUT_DIR/model.ts and OUT_DIR/model.json. A checkpoint trained under
another torch version (a GPU box's PyTorch 2.x, say) is re-exported this way,
so the daemon's libtorch only ever loads TorchScript made by its own version.
history.json and metrics.json lying beside the checkpoint are copied to
OUT_DIR when it is another folder.

OUT_DIR is written whole or not at all (training/model_folder.py): the files
go into a hidden .NAME.tmp-PID folder beside it, which then takes its place in
one rename; the other files of an existing OUT_DIR (checkpoint.pt when
re-exporting in place) are carried over. A kill leaves the old folder or the
new one; a full disk is an error naming the folder, and the old one stays.

The exported module keeps ``features`` as an nn.Sequential submodule with
out-of-place ReLUs, so the shim can run it layer by layer and read any
layer's output without a later layer overwriting it.
"""

import argparse
import io
import json
import os
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import model_folder  # noqa: E402
from vgg import VGG, layer_table  # noqa: E402

FORMAT = "loupe-vgg-checkpoint"


def make_checkpoint(model, config, manifest):
    """The checkpoint dict: a CPU state_dict, the architecture config and the
    manifest fields (name, classes, input, training). Config and manifest are
    stored as JSON text: torch 1.13's ``weights_only`` unpickler refuses
    floats, and a checkpoint must load that way under 1.13 and 2.x alike."""
    sd = {k: v.detach().cpu().contiguous()
          for k, v in model.state_dict().items()}
    return {"format": FORMAT, "version": 1, "state_dict": sd,
            "config_json": json.dumps(config),
            "manifest_json": json.dumps(manifest)}


def load_checkpoint(path):
    """Load a checkpoint written by train_vgg.py onto the CPU.

    Raises ValueError when the file is not such a checkpoint."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # a torch without weights_only
        ck = torch.load(path, map_location="cpu")
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise ValueError("%s: not a train_vgg.py checkpoint (no format %r)"
                         % (path, FORMAT))
    return ck


def config_of(ck):
    return json.loads(ck["config_json"])


def manifest_of(ck):
    return json.loads(ck["manifest_json"])


def build(ck):
    """The eval-mode VGG of a checkpoint, with out-of-place ReLUs."""
    model = VGG(config_of(ck), inplace=False)
    model.load_state_dict(ck["state_dict"], strict=True)
    return model.eval()


def example_input(manifest, n=2, seed=0):
    inp = manifest["input"]
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, inp["channels"], inp["height"], inp["width"],
                       generator=g)


def export(ck, out_dir, name=None, trace=False):
    """Write out_dir/model.ts and out_dir/model.json; return the manifest.

    out_dir is the staging folder of a model folder (model_folder.staged):
    the files are written as they are, not each renamed into place. The
    module is serialised in memory, loaded back and compared with the eager
    module on a random batch (a difference above 1e-4 raises RuntimeError)
    before a byte is written: torch's own file writer aborts the process on
    a full disk, Python's raises OSError."""
    model = build(ck)
    manifest = manifest_of(ck)
    if name:
        manifest["name"] = name
    x = example_input(manifest)
    with torch.no_grad():
        if trace:
            ts = torch.jit.trace(model, x)
        else:
            ts = torch.jit.script(model)
    buf = io.BytesIO()
    torch.jit.save(ts, buf)
    loaded = torch.jit.load(io.BytesIO(buf.getvalue()), map_location="cpu")
    with torch.no_grad():
        diff = float((loaded(x) - model(x)).abs().max())
    if not diff <= 1e-4:
        raise RuntimeError("exported module differs from eager by %g" % diff)
    model_folder.write_bytes(os.path.join(out_dir, "model.ts"),
                             buf.getbuffer())

    manifest["kind"] = "torchscript"
    manifest["layers"] = layer_table(model.features)
    manifest["export"] = {"torch": torch.__version__,
                          "method": "trace" if trace else "script",
                          "max_abs_diff_vs_eager": diff}
    order = ["name", "kind", "classes", "input", "layers", "training",
             "export"]
    out = {k: manifest[k] for k in order if k in manifest}
    out.update({k: v for k, v in manifest.items() if k not in out})
    model_folder.write_json(os.path.join(out_dir, "model.json"), out)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="export_vgg.py", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint.pt written by train_vgg.py")
    p.add_argument("out_dir", help="model folder to write model.ts and "
                                   "model.json into")
    p.add_argument("--name", help="model name for model.json (default: the "
                                  "checkpoint's)")
    p.add_argument("--trace", action="store_true",
                   help="torch.jit.trace instead of torch.jit.script")
    args = p.parse_args(argv)
    src = os.path.dirname(os.path.abspath(args.checkpoint))
    out = args.out_dir
    # Re-exporting in place keeps the folder's other files (checkpoint.pt).
    keep = os.listdir(out) if os.path.isdir(out) else []
    try:
        ck = load_checkpoint(args.checkpoint)
        with model_folder.staged(out, carry=keep) as tmp:
            m = export(ck, tmp, name=args.name, trace=args.trace)
            if src != os.path.abspath(out):
                for f in ("history.json", "metrics.json"):
                    if os.path.isfile(os.path.join(src, f)):
                        shutil.copyfile(os.path.join(src, f),
                                        os.path.join(tmp, f))
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        print("export_vgg.py: error: %s" % e, file=sys.stderr)
        return 2
    print("wrote %s (model %s, torch %s)"
          % (os.path.join(args.out_dir, "model.ts"), m["name"],
             torch.__version__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
