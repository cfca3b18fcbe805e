"""Write the PNGs bench/exec.sh sends: the first Fashion-MNIST test image at
28x28 (the MLP's input), the same image padded with black to a model's input
size (the VGG's, from its model.json), and the worst-case upload: a PNG of about
40 KB whose header declares 39,999,999 x 1 gray pixels, just under the daemon's
--max-pixels default of 40,000,000, so it is decoded in full (about 40 MB of
zero rows from one zlib stream, as png_bomb in tests/integration/loupe_fixture.py).

usage: exec_inputs.py OUT_DIR [--model-json FILE] [--bomb-width 39999999] [--bomb-height 1]
Writes OUT_DIR/in28.png, OUT_DIR/in<S>.png (S = the model's input side, when
--model-json is given) and OUT_DIR/bomb.png; prints their names and sizes.
Standard library only.
"""
import argparse
import gzip
import json
import os
import struct
import zlib

TEST_IMAGES = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"


def chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_gray(width, height, idat):
    """An 8-bit grayscale PNG of the given size around an already compressed IDAT."""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def png_rows(rows):
    """A PNG of the given rows of gray bytes (filter type 0 on every row)."""
    raw = b"".join(b"\0" + r for r in rows)
    return png_gray(len(rows[0]), len(rows), zlib.compress(raw, 9))


def png_bomb(width, height):
    """A PNG whose header promises width*height zero pixels, made row by row so
    that memory stays at one row."""
    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())
    return png_gray(width, height, b"".join(parts))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="folder to write the PNGs into")
    ap.add_argument("--model-json", help="a CNN's model.json: also write the image padded to its input size")
    ap.add_argument("--bomb-width", type=int, default=39999999, help="the bomb's declared width (default 39999999)")
    ap.add_argument("--bomb-height", type=int, default=1, help="the bomb's declared height (default 1)")
    a = ap.parse_args()

    with gzip.open(TEST_IMAGES) as f:
        px = f.read()[16:16 + 784]
    rows = [px[28 * y:28 * y + 28] for y in range(28)]
    out = {"in28.png": png_rows(rows)}
    if a.model_json:
        with open(a.model_json) as f:
            inp = json.load(f)["input"]
        w, h = inp["width"], inp["height"]
        ox, oy = (w - 28) // 2, (h - 28) // 2
        big = [bytes(w)] * oy + [bytes(ox) + r + bytes(w - 28 - ox) for r in rows] + [bytes(w)] * (h - 28 - oy)
        out["in%d.png" % h] = png_rows(big)
    out["bomb.png"] = png_bomb(a.bomb_width, a.bomb_height)
    for name, data in out.items():
        with open(os.path.join(a.out, name), "wb") as f:
            f.write(data)
        print(name, len(data))


if __name__ == "__main__":
    main()
