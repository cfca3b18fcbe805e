"""The C MLP against PyTorch on the same safetensors weights.

Logits, input gradients (the saliency maps' numerics) and parameter gradients
must agree within |a - b| <= 1e-5 * max(1, |b|) for every activation, the
parameter gradients both from the sparse kernels and from BLAS alone, and a
file written by the C side must load as-is with numpy.
Run by CTest: test_mlp_torch.py MLP_REF_BINARY
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "training"))
import safetensors_np  # noqa: E402

ACTS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "linear": lambda z: z}
SIZES = [784, 256, 128, 64, 32, 10]
N = 16


def torch_forward(params, x, act):
    h = x
    layers = len(SIZES) - 1
    for i in range(layers):
        h = h @ params[f"layers.{i}.weight"].T + params[f"layers.{i}.bias"]
        if i < layers - 1:
            h = ACTS[act](h)
    return h


def close(a, b, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    bound = 1e-5 * np.maximum(1.0, np.abs(b))
    bad = np.abs(a - b) > bound
    assert not bad.any(), f"{what}: {bad.sum()} of {bad.size} differ; worst {np.abs(a - b).max():.3g}"


def check(ref_bin, act, tmp):
    torch.manual_seed(sorted(ACTS).index(act))
    gen = np.random.default_rng(len(act))
    params = {}
    for i in range(len(SIZES) - 1):
        fan_in = SIZES[i]
        params[f"layers.{i}.weight"] = torch.randn(SIZES[i + 1], fan_in, dtype=torch.float64) * (1.5 / fan_in) ** 0.5
        params[f"layers.{i}.bias"] = torch.randn(SIZES[i + 1], dtype=torch.float64) * 0.1
    # The C side computes in float32: give both sides the same float32 weights.
    params32 = {k: v.float() for k, v in params.items()}
    wpath = os.path.join(tmp, f"{act}.safetensors")
    safetensors_np.save(wpath, {k: v.numpy() for k, v in params32.items()}, {"format": "pt"})
    x = gen.random((N, 784), dtype=np.float32)
    x[x < 0.5] = 0.0  # half the pixels exactly 0, as in Fashion-MNIST: the sparse kernels skip them
    y = gen.integers(0, 10, N).astype(np.uint8)
    x.tofile(os.path.join(tmp, "x.bin"))
    y.tofile(os.path.join(tmp, "y.bin"))
    out = os.path.join(tmp, "out.bin")
    resave = os.path.join(tmp, f"{act}-resaved.safetensors")
    subprocess.run([ref_bin, wpath, act, str(N), os.path.join(tmp, "x.bin"), os.path.join(tmp, "y.bin"),
                    out, resave], check=True)
    got = np.fromfile(out, dtype=np.float32)

    # Reference in float64 from the same float32 weights: the tolerance then measures the C side's error.
    p64 = {k: v.double().requires_grad_(True) for k, v in params32.items()}
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    logits = torch_forward(p64, xt, act)
    at = 0
    c_logits = got[at:at + N * 10].reshape(N, 10); at += N * 10
    c_igrad = got[at:at + N * 784].reshape(N, 784); at += N * 784
    close(c_logits, logits.detach().numpy(), f"{act} logits")

    picked = logits[torch.arange(N), torch.tensor(y, dtype=torch.long)].sum()
    (igrad,) = torch.autograd.grad(picked, xt, retain_graph=True)
    close(c_igrad, igrad.numpy(), f"{act} input gradients")

    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(y, dtype=torch.long))
    grads = torch.autograd.grad(loss, [p64[f"layers.{i}.{k}"] for i in range(5) for k in ("weight", "bias")])
    for path in ("sparse", "dense"):
        for (name, g) in zip([f"layers.{i}.{k}" for i in range(5) for k in ("weight", "bias")], grads):
            size = g.numel()
            close(got[at:at + size].reshape(g.shape), g.numpy(), f"{act} ({path}) d loss / d {name}")
            at += size
    assert at == got.size

    # A file the C side wrote loads as-is with numpy and holds the same numbers.
    back = safetensors_np.load(resave)
    for k, v in params32.items():
        assert np.array_equal(back[k], v.numpy()), k
    assert safetensors_np.metadata(resave)["activation"] == act
    print(f"ok   {act}: logits, input gradients and parameter gradients match PyTorch")


def main():
    ref_bin = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        for act in ACTS:
            check(ref_bin, act, tmp)
    print("4 passed, 0 failed")


if __name__ == "__main__":
    main()
