"""Fashion-MNIST from its four IDX .gz files, read with gzip and numpy only.

No download: the files come from Debian's dataset-fashion-mnist package
(/usr/share/datasets/fashion-mnist) or any folder holding the same four files.
"""

import gzip
import os

import numpy as np

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# IDX type code 0x08 is unsigned byte, the only one Fashion-MNIST uses.
_UBYTE = 0x08


def read_idx(path):
    """An IDX file (optionally gzip-compressed) as a uint8 numpy array.

    Raises ValueError when the header is not an unsigned-byte IDX header or
    when the payload is shorter or longer than the dimensions say.
    """
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError("%s: not an IDX file (bad magic)" % path)
    if data[2] != _UBYTE:
        raise ValueError("%s: IDX type 0x%02x, only unsigned bytes (0x08) "
                         "are supported" % (path, data[2]))
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ValueError("%s: truncated IDX header" % path)
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big")
            for i in range(ndim)]
    count = int(np.prod(dims))
    if len(data) - header != count:
        raise ValueError("%s: payload is %d bytes, dimensions %s need %d"
                         % (path, len(data) - header, dims, count))
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load(data_dir, part):
    """Images [N, 28, 28] uint8 and labels [N] int64 of ``part`` (train/test).

    Raises FileNotFoundError with the folder and the file names it expected.
    """
    images_name, labels_name = FILES[part]
    paths = [os.path.join(data_dir, n) for n in (images_name, labels_name)]
    for p in paths:
        if not os.path.isfile(p):
            raise FileNotFoundError(
                "%s not found: --data must name a folder holding the four "
                "Fashion-MNIST IDX .gz files (%s)"
                % (p, ", ".join(n for pair in FILES.values() for n in pair)))
    images = read_idx(paths[0])
    labels = read_idx(paths[1]).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError("%s: images %s and labels %s do not match"
                         % (data_dir, images.shape, labels.shape))
    if labels.size and labels.max() >= len(CLASSES):
        raise ValueError("%s: label %d out of range"
                         % (data_dir, labels.max()))
    return images, labels


def split(n, val_fraction, seed):
    """Seeded permutation of range(n) cut into (train indices, val indices)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])
