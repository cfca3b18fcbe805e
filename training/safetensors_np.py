"""Read and write safetensors files with numpy alone (Debian ships no safetensors package).

The format: an 8-byte little-endian header length, a JSON header mapping tensor
names to dtype, shape and data_offsets, then the raw little-endian data. This
is how a numpy or PyTorch user loads Loupe's MLP weights as they are:

    from safetensors_np import load
    tensors = load("models/mlp-relu/weights.safetensors")
    w0 = tensors["layers.0.weight"]        # numpy array [256, 784] float32
"""
import json
import struct

import numpy as np

_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16,
           "I64": np.int64, "I32": np.int32, "U8": np.uint8}


def load(path):
    """Return {name: numpy array} and check offsets against the file size."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = memoryview(raw)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        if not 0 <= begin <= end <= len(data):
            raise ValueError(f"{name}: offsets {begin}..{end} outside the data")
        arr = np.frombuffer(data[begin:end], dtype=_DTYPES[info["dtype"]])
        out[name] = arr.reshape(info["shape"]).copy()
    return out


def metadata(path):
    """The file's __metadata__ dict (empty when there is none)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)).get("__metadata__", {})


def save(path, tensors, meta=None):
    """Write {name: float32 array} in the reference layout (8-byte aligned data)."""
    header, blobs, off = {}, [], 0
    if meta:
        header["__metadata__"] = meta
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        header[name] = {"dtype": "F32", "shape": list(arr.shape),
                        "data_offsets": [off, off + arr.nbytes]}
        blobs.append(arr.tobytes())
        off += arr.nbytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
