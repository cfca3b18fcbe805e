"""The Python peer of `loupe serve` for bench/serve.sh: what a user would write instead.

A FastAPI app that loads every MLP model folder of a store (model.json +
weights.safetensors, read with numpy alone through training/safetensors_np.py),
and answers POST /v1/models/{m}/predict with the JSON fields Loupe's route
returns. The image is the raw request body (PNG or JPEG, as
`curl --data-binary @shoe.png -H 'Content-Type: image/png'` sends it), decoded
with Pillow, brought to the model's input as Loupe does (grayscale, area
resize, [0,1], invert=auto|true|false: auto inverts when the mean of the
resized image's border pixels is above 0.5), then a float32 forward pass in
numpy.

Run it as a user would:

    LOUPE_MODELS=models uvicorn --app-dir bench serve_peer:app --workers 2 --port 8000

Options come from the environment, since uvicorn owns the command line:
LOUPE_MODELS, the model store (default ./models).
"""
import io
import json
import math
import os
import sys
import time

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "training"))
from safetensors_np import load  # noqa: E402

ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0, out=z),
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "tanh": np.tanh,
    "linear": lambda z: z,
}


class Model:
    """One MLP folder: class names, input size and float32 weights."""

    def __init__(self, folder):
        with open(os.path.join(folder, "model.json")) as f:
            manifest = json.load(f)
        if manifest.get("kind") != "mlp":
            raise ValueError(f"{folder}: kind {manifest.get('kind')!r} is not mlp")
        self.name = os.path.basename(os.path.normpath(folder))
        self.classes = manifest["classes"]
        inp = manifest["input"]
        self.size = (inp["width"], inp["height"])
        self.mean = np.float32(inp.get("mean", [0.0])[0])
        self.std = np.float32(inp.get("std", [1.0])[0])
        self.act = ACTIVATIONS[manifest["mlp"]["activation"]]
        tensors = load(os.path.join(folder, "weights.safetensors"))
        n_layers = len(manifest["mlp"]["sizes"]) - 1
        # Stored [out, in]; kept transposed so a row vector multiplies it directly.
        self.weights = [np.ascontiguousarray(tensors[f"layers.{i}.weight"].T, dtype=np.float32)
                        for i in range(n_layers)]
        self.biases = [tensors[f"layers.{i}.bias"].astype(np.float32) for i in range(n_layers)]

    def logits(self, x):
        """x: [in] float32 -> [classes] float32; the activation on every layer but the last."""
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = x @ w + b
            if i < len(self.weights) - 1:
                x = self.act(x)
        return x


def load_store(root):
    models = {}
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if os.path.isfile(os.path.join(folder, "model.json")):
            try:
                models[name] = Model(folder)
            except (OSError, ValueError, KeyError) as e:
                print(f"serve_peer: skipping {folder}: {e}", file=sys.stderr)
    return models


MODELS = load_store(os.environ.get("LOUPE_MODELS", "models"))
app = FastAPI(title="Loupe's Python peer")


def preprocess(data, size, invert):
    """PNG/JPEG bytes -> ([h*w] float32 in [0,1], inverted)."""
    try:
        img = Image.open(io.BytesIO(data))
        img = img.convert("L").resize(size, Image.BOX)
    except Exception as e:  # Pillow raises many kinds for a bad image
        raise HTTPException(400, f"the body is not a readable PNG or JPEG: {e}")
    px = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    border = np.concatenate([px[0], px[-1], px[1:-1, 0], px[1:-1, -1]])
    flip = invert == "true" or (invert == "auto" and border.mean() > 0.5)
    if flip:
        px = 1.0 - px
    return px.reshape(-1), bool(flip)


@app.post("/v1/models/{name}/predict")
async def predict(name: str, request: Request, top_k: int = 5, invert: str = "auto"):
    t0 = time.perf_counter()
    model = MODELS.get(name)
    if model is None:
        raise HTTPException(404, f"no model named '{name}'")
    if top_k < 1 or invert not in ("auto", "true", "false"):
        raise HTTPException(400, "top_k must be >= 1 and invert auto, true or false")
    body = await request.body()
    if not body:
        raise HTTPException(400, "the request has no body")
    px, inverted = preprocess(body, model.size, invert)
    x = (px - model.mean) / model.std
    t1 = time.perf_counter()
    z = model.logits(x)
    t2 = time.perf_counter()
    e = np.exp(z - z.max())
    p = e / e.sum()
    best = int(np.argmax(p))
    nz = p[p > 0].astype(np.float64)
    h = float(-(nz * np.log(nz)).sum())
    order = sorted(range(len(p)), key=lambda i: (-p[i], i))[:top_k]
    probs = [float(v) for v in p]
    return {
        "model": name,
        "class": model.classes[best],
        "index": best,
        "probability": probs[best],
        "entropy_nats": h,
        "entropy_bits": h / math.log(2.0),
        "top_k": [{"class": model.classes[i], "index": i, "probability": probs[i]} for i in order],
        "probabilities": probs,
        "inverted": inverted,
        "timing_ms": {"decode": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3,
                      "total": (time.perf_counter() - t0) * 1e3},
    }
