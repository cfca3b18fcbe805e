"""The model-folder contract (docs/model-folder.md) against what the code really writes and loads.

Checks: the three JSON Schemas of docs/schemas/ are valid draft 2020-12 schemas; folders
written by the real trainers validate against them, plus the cross-field rules a schema
cannot express (classes = outputs, mean/std length = channels, sizes = the safetensors
shapes, model.ts outputs and `features` = the manifest, confusion sums, epoch numbering):
  - `loupe train-mlp` (tiny: 1 epoch on 6,000 images) with a checkpoint folder, a run
    stopped by divergence and a --keep-going run whose numbers became null;
  - training/train_vgg.py (VGG11 at width 1/16, one epoch on 256 images) without export,
    then training/export_vgg.py on its state_dict checkpoint ("resize": "pad"), and the
    imagenet-head layout exported by the trainer itself ("resize": "resize_crop");
each such folder also loads in `loupe predict` (the daemon's loader). Broken documents
(missing "classes", wrong "kind", negative height, ...) are rejected by the schema or by
the cross-field checks, and the loader refuses those it must refuse.
Run by CTest: /usr/bin/python3 test_schemas.py LOUPE_BINARY (about 10 s on 2 cores).
"""
import copy
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TRAINING = os.path.join(ROOT, "training")
SCHEMAS = os.path.join(ROOT, "docs", "schemas")
sys.path.insert(0, TRAINING)
import safetensors_np  # noqa: E402

try:
    import jsonschema
except ImportError:
    sys.exit("test_schemas.py: needs python3-jsonschema (scripts/packages.txt; scripts/install-deps.sh installs it)")

LOUPE = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "cli", "loupe")
FAILED = []
TMP = tempfile.mkdtemp(prefix="loupe-schemas-")


def case(fn):
    t0 = time.monotonic()
    try:
        fn()
        print(f"ok   {fn.__name__} ({time.monotonic() - t0:.1f} s)", flush=True)
    except Exception as e:  # an assertion, or a file an earlier case failed to write
        FAILED.append(fn.__name__)
        print(f"FAIL {fn.__name__}: {type(e).__name__}: {e}", flush=True)
    return fn


def load_json(*parts):
    with open(os.path.join(*parts)) as f:
        return json.load(f)


SCHEMA = {name: load_json(SCHEMAS, f"{name}.schema.json") for name in ("model", "metrics", "history")}
VALIDATOR = {name: jsonschema.Draft202012Validator(s) for name, s in SCHEMA.items()}


def sub_validator(name):
    """A validator for one of model.schema.json's $defs (the trainers' training objects)."""
    s = {"$schema": SCHEMA["model"]["$schema"], "$defs": SCHEMA["model"]["$defs"], "$ref": f"#/$defs/{name}"}
    return jsonschema.Draft202012Validator(s)


def schema_errors(name, doc):
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in VALIDATOR[name].iter_errors(doc)]


def assert_valid(name, doc, where):
    errs = schema_errors(name, doc)
    assert not errs, f"{where}: {name}.schema.json: " + "; ".join(errs[:5])


# ==== What a schema cannot say ====

def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def model_cross(man, folder=None):
    """Cross-field problems of a manifest (and, given its folder, of its weights); [] when none."""
    bad = []
    inp, classes = man["input"], man["classes"]
    for k in ("channels", "height", "width"):
        if not is_int(inp[k]):
            bad.append(f"input.{k} is {inp[k]!r}: the loader wants a JSON integer")
    c = inp["channels"]
    for k in ("mean", "std"):
        v = inp.get(k)
        if isinstance(v, list) and len(v) not in (1, c):
            bad.append(f"input.{k} has {len(v)} values for {c} channels")
    if inp.get("resize") == "resize_crop" and inp["resize_to"] < max(inp["height"], inp["width"]):
        bad.append("input.resize_to is smaller than the crop")
    if man["kind"] == "mlp":
        sizes = man["mlp"]["sizes"]
        if not all(map(is_int, sizes)):
            bad.append("mlp.sizes holds a non-integer")
        elif sizes[0] != c * inp["height"] * inp["width"]:
            bad.append(f"mlp.sizes[0] = {sizes[0]}, the input is {c}x{inp['height']}x{inp['width']}")
        if sizes[-1] != len(classes):
            bad.append(f"{sizes[-1]} outputs for {len(classes)} classes")
        if folder:
            bad += weights_cross(sizes, os.path.join(folder, "weights.safetensors"))
    elif folder:
        bad += torchscript_cross(man, os.path.join(folder, "model.ts"))
    return bad


def weights_cross(sizes, path):
    """weights.safetensors holds exactly layers.<i>.weight [sizes[i+1], sizes[i]] and .bias [sizes[i+1]], F32."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    want = {}
    for i in range(len(sizes) - 1):
        want[f"layers.{i}.weight"] = [sizes[i + 1], sizes[i]]
        want[f"layers.{i}.bias"] = [sizes[i + 1]]
    got = {k: v["shape"] for k, v in header.items()}
    bad = [] if got == want else [f"weights.safetensors tensors {got} are not {want}"]
    bad += [f"{k} is {v['dtype']}, not F32" for k, v in header.items() if v["dtype"] != "F32"]
    if not bad:
        safetensors_np.load(path)  # offsets within the file
    return bad


def torchscript_cross(man, path):
    """model.ts maps [1, C, H, W] to len(classes) logits; layers[i].index = i < len(features)."""
    import torch
    inp = man["input"]
    ts = torch.jit.load(path, map_location="cpu").eval()
    with torch.no_grad():
        out = ts(torch.zeros(1, inp["channels"], inp["height"], inp["width"]))
    bad = [] if tuple(out.shape) == (1, len(man["classes"])) else [f"model.ts gives {tuple(out.shape)}"]
    n = len(list(ts.features.children()))
    idx = [layer["index"] for layer in man.get("layers", [])]
    if idx and idx != list(range(n)):
        bad.append(f"layers indices {idx} are not 0..{n - 1} of model.ts's features")
    return bad


def metrics_cross(m, classes=None):
    bad = []
    k, conf = len(m["classes"]), m["confusion"]
    if classes is not None and m["classes"] != classes:
        bad.append("metrics classes differ from model.json's")
    if len(conf) != k or any(len(row) != k for row in conf):
        return bad + [f"confusion is not {k}x{k}"]
    if len(m["class_accuracy"]) != k or len(m["one_vs_rest"]) != k:
        return bad + [f"class_accuracy / one_vs_rest do not have {k} entries"]
    n = sum(map(sum, conf))
    if n != m["n"]:
        bad.append(f"confusion sums to {n}, n = {m['n']}")
    if n and not math.isclose(m["test_accuracy"], sum(conf[i][i] for i in range(k)) / n, abs_tol=1e-9):
        bad.append("test_accuracy is not trace / n")
    for i in range(k):
        row, col = sum(conf[i]), sum(r[i] for r in conf)
        ca = m["class_accuracy"][i]
        if row and not (ca is not None and math.isclose(ca, conf[i][i] / row, abs_tol=1e-9)):
            bad.append(f"class_accuracy[{i}] = {ca}, expected {conf[i][i] / row}")
        o = m["one_vs_rest"][i]
        tp = conf[i][i]
        if (o["class"], o["tp"], o["fn"], o["fp"], o["tn"]) != (m["classes"][i], tp, row - tp, col - tp,
                                                                n - row - col + tp):
            bad.append(f"one_vs_rest[{i}] does not follow from the confusion matrix")
    counts = [x["count"] for x in m["most_confused"]]
    if counts != sorted(counts, reverse=True):
        bad.append("most_confused is not largest first")
    for x in m["most_confused"]:
        t, p = m["classes"].index(x["true"]), m["classes"].index(x["predicted"])
        if t == p or conf[t][p] != x["count"]:
            bad.append(f"most_confused {x} is not an off-diagonal cell")
    return bad


def history_cross(h):
    bad = []
    if [e["epoch"] for e in h["epochs"]] != list(range(1, len(h["epochs"]) + 1)):
        bad.append("epochs are not numbered 1, 2, ...")
    if "kept" in h and h["kept"]["epoch"] != h.get("kept_epoch"):
        bad.append("kept.epoch differs from kept_epoch")
    if h.get("stopped") == "diverged" and not h.get("events"):
        bad.append("stopped diverged without an event")
    return bad


# ==== The daemon's loader, through `loupe predict` ====

def png_gray(w, h):
    """A PNG of a light square on black, for `loupe predict`."""
    rows = b"".join(b"\0" + bytes(200 if w // 4 <= x < 3 * w // 4 and h // 4 <= y < 3 * h // 4 else 0
                                  for x in range(w)) for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


IMAGE = os.path.join(TMP, "square.png")
with open(IMAGE, "wb") as f:
    f.write(png_gray(28, 28))


def predict(folder):
    """(exit status, stderr) of `loupe predict folder IMAGE`."""
    p = subprocess.run([LOUPE, "predict", folder, IMAGE], capture_output=True, text=True, timeout=120)
    return p.returncode, p.stderr.strip()


def no_torch(stderr):
    return "no libtorch" in stderr


def check_folder(folder, training_def=None, loads=True):
    """Validate a model folder's three JSON files and their cross-field rules; with loads=True it
    must also serve a prediction, with a string the loader must refuse it with that reason."""
    man = load_json(folder, "model.json")
    assert_valid("model", man, folder)
    weights = "weights.safetensors" if man["kind"] == "mlp" else "model.ts"
    assert os.path.isfile(os.path.join(folder, weights)), f"{folder}: no {weights}"
    bad = model_cross(man, folder)
    if training_def:
        bad += [f"training: {e.message}" for e in sub_validator(training_def).iter_errors(man["training"])]
    for name, cross in (("metrics", lambda d: metrics_cross(d, man["classes"])), ("history", history_cross)):
        if os.path.isfile(os.path.join(folder, f"{name}.json")):
            doc = load_json(folder, f"{name}.json")
            assert_valid(name, doc, folder)
            bad += cross(doc)
    assert not bad, f"{folder}: " + "; ".join(bad)
    if loads is True:
        rc, err = predict(folder)
        assert rc == 0 or (man["kind"] == "torchscript" and no_torch(err)), f"loupe predict {folder}: {rc} {err}"
    elif loads:
        rc, err = predict(folder)
        assert rc != 0 and loads in err, f"loupe predict {folder}: {rc} {err}, expected '{loads}'"
    return man


def train_mlp(name, *args, expect=0):
    out = os.path.join(TMP, name)
    p = subprocess.run([LOUPE, "train-mlp", "--out", out, "--quiet", *args], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == expect, f"train-mlp {args}: exit {p.returncode}\n{p.stderr}"
    return out


# ==== Cases ====

@case
def schemas_are_valid_draft_2020_12():
    for name, s in SCHEMA.items():
        assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema", name
        jsonschema.Draft202012Validator.check_schema(s)
    for name in ("mlp_training", "vgg_training"):
        jsonschema.Draft202012Validator.check_schema(SCHEMA["model"]["$defs"][name])


@case
def mlp_trainer_folders_validate():
    out = train_mlp("mlp", "--epochs", "1", "--train-limit", "6000", "--checkpoint-at", "1")
    man = check_folder(out, "mlp_training")
    assert man["name"] == "mlp" and man["mlp"]["sizes"] == [784, 256, 128, 64, 32, 10], man["mlp"]
    assert set(load_json(out, "history.json")) == {"epochs", "events", "best_epoch", "kept_epoch", "kept", "stopped"}
    ck = os.path.join(out, "checkpoints", "epoch-1")
    assert check_folder(ck, "mlp_training")["name"] == "mlp-epoch-1"
    assert set(load_json(ck, "history.json")) == {"epochs", "events", "best_epoch"}
    # Divergence: an event, "stopped", and numbers that became null.
    div = train_mlp("div", "--epochs", "3", "--lr", "50", "--activation", "linear", "--train-limit", "3000",
                    expect=3)
    # Its kept weights are finite but near 1e30, so a prediction overflows: a clear error, not a crash.
    check_folder(div, "mlp_training", loads="non-finite output")
    h = load_json(div, "history.json")
    assert h["stopped"] == "diverged" and h["events"][0]["kind"] == "diverged", h
    on = train_mlp("on", "--epochs", "2", "--lr", "50", "--activation", "linear", "--train-limit", "3000",
                   "--keep-going")
    # Valid files, but the weights went non-finite: the loader skips such a folder.
    check_folder(on, "mlp_training", loads="non-finite parameters")
    assert load_json(on, "history.json")["epochs"][-1]["val_loss"] is None


VGG_TINY = ["--depth", "11", "--width", "0.0625", "--epochs", "1", "--train-subset", "256", "--val-subset", "64",
            "--test-subset", "64", "--threads", "1", "--quiet"]


@case
def vgg_folders_validate():
    import torch
    torch.set_num_threads(1)
    import export_vgg
    import train_vgg
    # A state_dict checkpoint (as from a GPU box), exported by this machine's torch.
    ckdir, out = os.path.join(TMP, "vgg-ck"), os.path.join(TMP, "vgg")
    assert train_vgg.main(VGG_TINY + ["--no-export", "--out", ckdir, "--name", "vgg-tiny"]) == 0
    assert not os.path.exists(os.path.join(ckdir, "model.json"))
    assert export_vgg.main([os.path.join(ckdir, "checkpoint.pt"), out]) == 0
    for f in ("history.json", "metrics.json"):
        assert os.path.isfile(os.path.join(out, f)), f"export_vgg.py did not copy {f}"
    man = check_folder(out, "vgg_training")
    assert man["input"]["resize"] == "pad" and man["export"]["method"] == "script", man["input"]
    assert [layer["type"] for layer in man["layers"][:4]] == ["conv2d", "batchnorm2d", "relu", "maxpool2d"]
    # The seed recipe's preprocessing (resize 256, centre crop, 3 channels), exported by the trainer.
    crop = os.path.join(TMP, "vgg-crop")
    assert train_vgg.main(VGG_TINY + ["--head", "imagenet", "--input-size", "32", "--out", crop]) == 0
    man = check_folder(crop, "vgg_training")
    inp = man["input"]
    assert (inp["resize"], inp["resize_to"], inp["channels"], len(inp["mean"])) == ("resize_crop", 256, 3, 3), inp


def mutated(doc, edit):
    d = copy.deepcopy(doc)
    edit(d)
    return d


def delete(path):
    def edit(d):
        for k in path[:-1]:
            d = d[k]
        del d[path[-1]]
    return edit


def setter(path, value):
    def edit(d):
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return edit


# (what, edit, how it is caught: "schema" or "cross", whether the loader refuses it too)
BROKEN_MODELS = [
    ("missing classes", delete(["classes"]), "schema", True),
    ("kind onnx", setter(["kind"], "onnx"), "schema", True),
    ("negative height", setter(["input", "height"], -28), "schema", True),
    ("one class", setter(["classes"], ["Bag"]), "schema", True),
    ("classes not strings", setter(["classes", 3], 3), "schema", True),
    ("kind mlp without mlp", delete(["mlp"]), "schema", True),
    ("unknown activation", setter(["mlp", "activation"], "swish"), "schema", True),
    ("no input", delete(["input"]), "schema", True),
    ("channels 5", setter(["input", "channels"], 5), "schema", True),
    ("MLP on 3 channels", setter(["input", "channels"], 3), "schema", True),
    ("std 0", setter(["input", "std"], [0.0]), "schema", True),
    ("empty mean", setter(["input", "mean"], []), "schema", True),
    ("mean a string", setter(["input", "mean"], "0.5"), "schema", True),
    ("misspelt input key", lambda d: d["input"].update(heigth=d["input"].pop("height")), "schema", True),
    ("MLP resize pad (ignored by the loader)", setter(["input", "resize"], "pad"), "schema", False),
    ("unknown input key (ignored by the loader)", setter(["input", "colour"], "gray"), "schema", False),
    ("height 28.0", setter(["input", "height"], 28.0), "cross", True),
    ("11 classes for 10 outputs", lambda d: d["classes"].append("Hat"), "cross", True),
    ("mean of 2 for 1 channel", setter(["input", "mean"], [0.1, 0.2]), "cross", True),
    ("sizes[0] not the input", setter(["input", "width"], 27), "cross", True),
]


@case
def broken_manifests_are_rejected():
    good = os.path.join(TMP, "mlp")
    man = load_json(good, "model.json")
    assert not schema_errors("model", man) and not model_cross(man), "the starting manifest is not valid"
    for i, (what, edit, how, loader) in enumerate(BROKEN_MODELS):
        doc = mutated(man, edit)
        errs = schema_errors("model", doc)
        if how == "schema":
            assert errs, f"{what}: the schema accepted it"
        else:
            assert not errs, f"{what}: expected the schema to pass it, got {errs}"
            assert model_cross(doc), f"{what}: the cross-field checks accepted it"
        folder = os.path.join(TMP, f"broken-{i}")
        shutil.copytree(good, folder, ignore=shutil.ignore_patterns("checkpoints"))
        with open(os.path.join(folder, "model.json"), "w") as f:
            json.dump(doc, f)
        rc, err = predict(folder)
        if loader:
            assert rc != 0 and err, f"{what}: the loader accepted it"
        else:
            assert rc == 0, f"{what}: the loader refused it ({err}); update the schema's description"
    # A CNN without resize_to for resize_crop; kind mlp without weights is a loader matter only.
    crop = load_json(TMP, "vgg-crop", "model.json")
    assert schema_errors("model", mutated(crop, delete(["input", "resize_to"]))), "resize_crop without resize_to"
    assert model_cross(mutated(crop, setter(["input", "resize_to"], 16))), "resize_to below the crop"


BROKEN_METRICS = [
    ("missing test_accuracy", delete(["test_accuracy"]), "schema"),
    ("test_accuracy 1.5", setter(["test_accuracy"], 1.5), "schema"),
    ("confusion cell a string", setter(["confusion", 0, 0], "12"), "schema"),
    ("negative count", setter(["confusion", 0, 1], -1), "schema"),
    ("one_vs_rest without tp", delete(["one_vs_rest", 0, "tp"]), "schema"),
    ("six most_confused", lambda d: d["most_confused"].extend([{"true": "Bag", "predicted": "Coat", "count": 1}] * 6),
     "schema"),
    ("n off by one", lambda d: d.update(n=d["n"] + 1), "cross"),
    ("a 9x10 confusion", lambda d: d["confusion"].pop(), "cross"),
    ("test_accuracy not the trace", lambda d: d.update(test_accuracy=d["test_accuracy"] / 2), "cross"),
    ("tp moved to fp", lambda d: d["one_vs_rest"][0].update(tp=d["one_vs_rest"][0]["tp"] - 1,
                                                             fp=d["one_vs_rest"][0]["fp"] + 1), "cross"),
]

BROKEN_HISTORIES = [
    ("missing epochs", delete(["epochs"]), "schema"),
    ("epoch 0", setter(["epochs", 0, "epoch"], 0), "schema"),
    ("val_accuracy a string", setter(["epochs", 0, "val_accuracy"], "high"), "schema"),
    ("row without seconds", delete(["epochs", 0, "seconds"]), "schema"),
    ("stopped exploded", setter(["stopped"], "exploded"), "schema"),
    ("kept weights best", setter(["kept", "weights"], "best"), "schema"),
    ("event of another kind", lambda d: d["events"].append({"kind": "paused", "epoch": 1, "message": "x"}), "schema"),
    ("epochs 1, 3", lambda d: d["epochs"].append(dict(d["epochs"][0], epoch=3)), "cross"),
    ("diverged without an event", setter(["stopped"], "diverged"), "cross"),
]


@case
def broken_metrics_and_histories_are_rejected():
    m = load_json(TMP, "mlp", "metrics.json")
    h = load_json(TMP, "mlp", "history.json")
    assert not metrics_cross(m) and not history_cross(h), "the starting documents are not valid"
    for name, doc, broken, cross in (("metrics", m, BROKEN_METRICS, metrics_cross),
                                     ("history", h, BROKEN_HISTORIES, history_cross)):
        for what, edit, how in broken:
            d = mutated(doc, edit)
            errs = schema_errors(name, d)
            if how == "schema":
                assert errs, f"{name}: {what}: the schema accepted it"
            else:
                assert not errs and cross(d), f"{name}: {what}: schema {errs}, cross-field {cross(d)}"


print(f"{5 - len(FAILED)} passed, {len(FAILED)} failed" + (f"; folders left in {TMP}" if FAILED else ""))
if not FAILED:
    shutil.rmtree(TMP, ignore_errors=True)
sys.exit(1 if FAILED else 0)
