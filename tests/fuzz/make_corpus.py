#!/usr/bin/python3
"""Write the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/.

Small, valid (and a few nearly valid) inputs of each format, so the fuzzers
start past the signatures and headers. Deterministic: the same files every
run; run it again after changing it and commit what changes.
"""
import argparse
import io
import json
import os
import struct
import zlib

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def gradient(mode, w, h):
    """A small image with some structure: a light frame around a dark diagonal."""
    im = Image.new("L", (w, h))
    im.putdata([(255 if x in (0, w - 1) or y in (0, h - 1) else (x * 7 + y * 13) % 256)
                for y in range(h) for x in range(w)])
    if mode == "L":
        return im
    if mode == "P":
        return im.convert("P")
    return im.convert(mode)


def png(im, **kw):
    b = io.BytesIO()
    im.save(b, "PNG", **kw)
    return b.getvalue()


def jpeg(im, **kw):
    b = io.BytesIO()
    im.save(b, "JPEG", quality=kw.pop("quality", 75), **kw)
    return b.getvalue()


def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_raw(w, h, depth, ctype, rows, interlace=0, extra=b""):
    """A PNG written by hand (16-bit, odd bit depths, tRNS) from filtered rows."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra +
            png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b""))


def images():
    """(name, bytes) of every image seed."""
    out = []
    for mode in ("L", "LA", "RGB", "RGBA", "P"):
        out.append((f"png_{mode.lower()}_12x10", png(gradient(mode, 12, 10))))
    out.append(("png_l_interlaced_9x7", png(gradient("L", 9, 7), interlace=1)))
    out.append(("png_rgb_1x1", png(gradient("RGB", 1, 1))))
    out.append(("png_l_40x3", png(gradient("L", 40, 3))))
    # 16-bit gray, 1-bit gray, 4-bit palette with tRNS: the paths PIL does not write.
    out.append(("png_16bit_4x4", png_raw(4, 4, 16, 0, b"".join(b"\0" + bytes(range(r * 8, r * 8 + 8)) for r in range(4)))))
    out.append(("png_1bit_8x2", png_raw(8, 2, 1, 0, b"\0\xaa\0\x55")))
    plte = png_chunk(b"PLTE", bytes([0, 0, 0, 255, 255, 255, 128, 0, 0]))
    trns = png_chunk(b"tRNS", bytes([0, 255]))
    out.append(("png_pal4_trns_4x2", png_raw(4, 2, 4, 3, b"\0\x01\x20\0\x12\x01", extra=plte + trns)))
    out.append(("png_gray_trns_2x2", png_raw(2, 2, 8, 0, b"\0\x00\xff\0\x80\x00",
                                             extra=png_chunk(b"tRNS", b"\0\x80"))))
    for mode in ("L", "RGB", "CMYK"):
        out.append((f"jpeg_{mode.lower()}_16x12", jpeg(gradient(mode, 16, 12))))
    out.append(("jpeg_progressive_17x9", jpeg(gradient("RGB", 17, 9), progressive=True)))
    out.append(("jpeg_l_1x1", jpeg(gradient("L", 1, 1))))
    out.append(("jpeg_420_24x24", jpeg(gradient("RGB", 24, 24), subsampling=2, quality=40)))
    return out


def corpus_img():
    for name, data in images():
        put("fuzz_img", name, data)


def corpus_body():
    # Byte 0: content type (json=0, +json=2, none=3, octet=4, form=5, png=6, jpeg=7;
    # 15 base64 alone; 48..63 multipart); byte 1: geometry and invert.
    flat = [round((i % 28) / 27, 3) for i in range(784)]
    rows = [[round(x / 27, 2) for x in range(28)] for _ in range(28)]
    put("fuzz_body", "json_pixels_flat", b"\x00\x00" + json.dumps({"pixels": flat}, separators=(",", ":")).encode())
    put("fuzz_body", "json_pixels_rows", b"\x00\x04" + json.dumps({"pixels": rows}, separators=(",", ":")).encode())
    put("fuzz_body", "json_pixels_bad", b"\x00\x01" + b'{"pixels": [0.5, "x", null, 2, -1e999]}')
    small = png(gradient("L", 6, 5))
    import base64
    b64 = base64.b64encode(small).decode()
    put("fuzz_body", "json_image_b64", b"\x01\x02" + json.dumps({"image": b64}).encode())
    put("fuzz_body", "json_image_dataurl", b"\x02\x05" + json.dumps({"image": "data:image/png;base64," + b64}).encode())
    put("fuzz_body", "json_image_urlsafe", b"\x00\x03" + json.dumps({"image": base64.urlsafe_b64encode(small).decode().rstrip("=")}).encode())
    put("fuzz_body", "sniff_json", b"\x03\x00  {\"image\": \"" + b64.encode() + b"\"}")
    put("fuzz_body", "sniff_png", b"\x04\x01" + small)
    put("fuzz_body", "form_jpeg", b"\x05\x02" + jpeg(gradient("L", 8, 8)))
    put("fuzz_body", "png_typed", b"\x06\x07" + small)
    put("fuzz_body", "jpeg_typed", b"\x07\x08" + jpeg(gradient("RGB", 9, 9)))
    put("fuzz_body", "text_plain", b"\x08\x00hello")
    put("fuzz_body", "multipart_field", b"\x30\x00" + small)
    put("fuzz_body", "base64_alone", b"\x0f\x00" + b64.encode() + b"\n==")
    put("fuzz_body", "json_dupkeys", b"\x00\x00" + b'{"image": "AAAA", "image": "BBBB"}')


def corpus_query():
    # Byte 0: op (0 predict, 1 saliency, 2 filters, 3 activations, 4 explain, 5 class visualisation) + 6 * cnn.
    put("fuzz_query", "predict_topk", b"\x00\n\ntop_k=3&invert=auto")
    put("fuzz_query", "predict_topk_big", b"\x00\n\ntop_k=99999999&invert=TRUE")
    put("fuzz_query", "saliency_target_name", b"\x01\n\ntarget=Sneaker&format=json&overlay=1&scale=4")
    put("fuzz_query", "saliency_target_index", b"\x07\n\ntarget=9&format=png&overlay&scale=32&invert=no")
    put("fuzz_query", "saliency_escaped", b"\x01\n\ntarget=Ankle%20boot&format=%4aSON&invert=%ff")
    put("fuzz_query", "filters_full", b"\x08\n0\n3\niterations=30&every=5&lr=0.1&seed=42&format=json&scale=2")
    put("fuzz_query", "filters_bad", b"\x08\n1\n99\niterations=0&every=9&lr=1e400&seed=-1")
    put("fuzz_query", "activations", b"\x09\n2\n\nformat=png&scale=3")
    put("fuzz_query", "activations_mlp", b"\x03\n0\n\n")
    put("fuzz_query", "samples", b"\x00\n\nn=12&seed=42&class=Sneaker")
    put("fuzz_query", "samples_edges", b"\x00\n\nn=100&seed=18446744073709551616&class=9")
    put("fuzz_query", "samples_bad", b"\x00\n\nn=0x10&seed=-1&class=10")
    put("fuzz_query", "explain_smoothgrad", b"\x04\n\nmethod=smoothgrad&samples=256&noise=0.2&seed=7&target=3")
    put("fuzz_query", "explain_ig", b"\x0a\n\nmethod=integrated_gradients&steps=64&baseline=zero&format=json")
    put("fuzz_query", "explain_gradcam", b"\x0a\n\nmethod=gradcam&layer=3&overlay=1&scale=2")
    put("fuzz_query", "explain_occlusion", b"\x04\n\nmethod=occlusion&window=28&stride=1")
    put("fuzz_query", "explain_bad", b"\x0a\n\nmethod=lime&samples=0&noise=nan&steps=99999&window=0")
    put("fuzz_query", "classviz", b"\x05\nSneaker\n\niterations=10&every=2&l2=0.5&lr=0.05")
    put("fuzz_query", "classviz_bad", b"\x0b\n10\n\nl2=-1&every=0")


def corpus_safetensors():
    def st(tensors, meta=None, data=b""):
        hdr = dict(tensors)
        if meta is not None:
            hdr["__metadata__"] = meta
        h = json.dumps(hdr, separators=(",", ":")).encode()
        return struct.pack("<Q", len(h)) + h + data

    def layer(i, out_, in_, off):
        w = out_ * in_ * 4
        return {f"layers.{i}.weight": {"dtype": "F32", "shape": [out_, in_], "data_offsets": [off, off + w]},
                f"layers.{i}.bias": {"dtype": "F32", "shape": [out_], "data_offsets": [off + w, off + w + out_ * 4]}}, off + w + out_ * 4

    t0, off = layer(0, 3, 4, 0)
    t1, off = layer(1, 2, 3, off)
    data = struct.pack(f"<{off // 4}f", *[(k % 7 - 3) / 10 for k in range(off // 4)])
    put("fuzz_safetensors", "mlp_4_3_2", st({**t0, **t1}, {"format": "pt", "activation": "relu"}, data))
    put("fuzz_safetensors", "mlp_4_3_2_tanh", st({**t0, **t1}, {"format": "pt", "activation": "tanh"}, data))
    t0, off = layer(0, 2, 2, 0)
    put("fuzz_safetensors", "mlp_2_2", st(t0, None, bytes(off)))
    put("fuzz_safetensors", "overlap", st({**layer(0, 2, 2, 0)[0], "layers.0.bias": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, None, bytes(16)))
    put("fuzz_safetensors", "bad_dtype", st({"layers.0.weight": {"dtype": "F16", "shape": [1, 1], "data_offsets": [0, 2]}}, None, bytes(2)))
    put("fuzz_safetensors", "short", struct.pack("<Q", 1000) + b"{}")


def corpus_idx():
    # Byte 0: bit 0 images (else labels), bit 1 through a file (gz reader).
    labels = struct.pack(">II", 0x801, 5) + bytes([0, 1, 2, 9, 3])
    images_ = struct.pack(">IIII", 0x803, 2, 3, 4) + bytes(range(24))
    put("fuzz_idx", "labels", b"\x00" + labels)
    put("fuzz_idx", "images", b"\x01" + images_)
    put("fuzz_idx", "labels_file", b"\x02" + labels)
    put("fuzz_idx", "images_file_gz", b"\x03" + gzip_bytes(images_))
    put("fuzz_idx", "images_truncated", b"\x01" + images_[:-3])
    put("fuzz_idx", "images_empty", b"\x01" + struct.pack(">IIII", 0x803, 0, 28, 28))


def gzip_bytes(data):
    import gzip
    return gzip.compress(data, mtime=0)


def corpus_model_json():
    base = {"name": "fuzz", "kind": "mlp", "classes": ["a", "b"],
            "input": {"channels": 1, "height": 2, "width": 2, "mean": [0.5], "std": [0.25]},
            "mlp": {"activation": "relu", "sizes": [4, 3, 2]}, "training": {"epochs": 1}}
    put("fuzz_model_json", "mlp_ok", json.dumps(base))
    metrics = {"test_accuracy": 0.5, "confusion": [[1, 0], [0, 1]]}
    history = {"epochs": [{"epoch": 1, "train_loss": 0.7, "val_accuracy": 0.5}]}
    put("fuzz_model_json", "mlp_ok_metrics_history", json.dumps(base) + "\0" + json.dumps(metrics) + "\0" + json.dumps(history))
    bad = dict(base, input={"channels": 1, "height": 2, "width": 2, "mean": 0.1, "std": [0]})
    put("fuzz_model_json", "mlp_bad_std", json.dumps(bad))
    cnn = {"name": "v", "kind": "torchscript", "classes": ["a", "b", "c"],
           "input": {"channels": 3, "height": 32, "width": 32, "mean": [0.1, 0.2, 0.3], "std": [0.3, 0.3, 0.3],
                     "resize": "resize_crop", "resize_to": 36},
           "layers": [{"index": 0, "name": "features.0", "type": "conv2d", "channels": 16}]}
    put("fuzz_model_json", "cnn_crop", json.dumps(cnn))
    cnn["input"].update(resize="pad", source_size=28)
    put("fuzz_model_json", "cnn_pad", json.dumps(cnn))
    put("fuzz_model_json", "mlp_sizes_mismatch", json.dumps(dict(base, mlp={"activation": "tanh", "sizes": [4, 2]})))
    tiny = dict(base, input={"channels": 1, "height": 2, "width": 2, "mean": [1e39], "std": [1e-50]})
    put("fuzz_model_json", "mlp_norm_float_range", json.dumps(tiny))
    put("fuzz_model_json", "broken_metrics", json.dumps(base) + "\0{\"test_accuracy\": 2")


def corpus_multipart():
    # First line: the Content-Type header; the rest: the body.
    small = png(gradient("L", 6, 5))

    def form(boundary, parts, ct=None, end=True):
        body = b""
        for head, data in parts:
            body += b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + data + b"\r\n"
        if end:
            body += b"--" + boundary + b"--\r\n"
        return (ct or b"multipart/form-data; boundary=" + boundary) + b"\n" + body

    img = b'Content-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png'
    put("fuzz_multipart", "image_png", form(b"XyZ", [(img, small)]))
    put("fuzz_multipart", "image_jpeg_quoted", form(b"a'()+_,-./:=?", [(img, jpeg(gradient("L", 8, 8)))],
                                                    ct=b'multipart/form-data; boundary="a\'()+_,-./:=?"'))
    put("fuzz_multipart", "two_fields", form(b"----WebKitFormBoundary7MA4YWxkTrZu0gW",
                                             [(b'Content-Disposition: form-data; name="note"', b"hello"), (img, small)]))
    put("fuzz_multipart", "no_image_field", form(b"b", [(b'Content-Disposition: form-data; name="file"', small)]))
    put("fuzz_multipart", "unterminated", form(b"b", [(img, small)], end=False))
    put("fuzz_multipart", "image_twice", form(b"zz", [(img, small[:20]), (img, small[20:])]))
    put("fuzz_multipart", "charset_param", form(b"q", [(img, small)], ct=b"multipart/form-data; charset=utf-8; boundary=q"))


def corpus_paths():
    # Byte 0: 0 static path, 1 report name, 2 report name + "\n" + figure file.
    for i, p in enumerate(["/index.html", "/", "/sub/page.html", "/link_in", "/link_out", "/sub/link_up",
                           "/out_dir/secret.html", "/link_loop", "/pipe.html", "/.hidden/x.html", "/../outside/secret.html",
                           "/docs/api.md", "/docs/guide/a.md", "/docs/link_out.md", "/docs/../static/index.html",
                           "/sub//page.html", "/sub/./page.html", "/app.js\\..", "/index.html/"]):
        put("fuzz_paths", f"static_{i:02d}", b"\x00" + p.encode())
    for i, n in enumerate(["r1", "r2", "r3", "evil", "..", ".r1", "r1.", "nope"]):
        put("fuzz_paths", f"report_{i:02d}", b"\x01" + n.encode())
    for i, (n, f) in enumerate([("r1", "a.png"), ("r1", "link_out.png"), ("r3", "a.png"), ("evil", "a.png"),
                                ("r1", "..png"), ("r1", "a.PNG"), ("r1", "report.json")]):
        put("fuzz_paths", f"figure_{i:02d}", b"\x02" + n.encode() + b"\n" + f.encode())


def corpus_v2():
    # Byte 0: 0 MLP 1x2x2, 1 CNN 2x2x3, 2 MLP 1x28x28.
    def body(shape, data, dtype="FP32", **extra):
        d = {"inputs": [{"name": "input", "shape": shape, "datatype": dtype, "data": data}]}
        d.update(extra)
        return json.dumps(d, separators=(",", ":")).encode()

    put("fuzz_v2", "mlp_fp32_flat", b"\x00" + body([1, 4], [0.1, 0.2, 0.3, 0.4], id="a1"))
    put("fuzz_v2", "mlp_fp32_nested", b"\x00" + body([2, 1, 2, 2], [[[[0, 1], [1, 0]]], [[[0.5, 0.5], [0.25, 1]]]]))
    put("fuzz_v2", "mlp_uint8", b"\x00" + body([1, 4], [0, 128, 255, 7], "UINT8", outputs=[{"name": "probabilities"}]))
    put("fuzz_v2", "cnn_fp32", b"\x01" + body([1, 2, 2, 3], [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, 12]]]))
    put("fuzz_v2", "cnn_uint8", b"\x01" + body([1, 2, 2, 3], list(range(0, 240, 20)), "UINT8"))
    put("fuzz_v2", "mlp784", b"\x02" + body([1, 784], [0.5] * 784))
    put("fuzz_v2", "huge_shape", b"\x02" + body([65536, 784], [0]))
    put("fuzz_v2", "bad_output", b"\x00" + body([1, 4], [1, 2, 3, 4], outputs=[{"name": "logits"}]))
    put("fuzz_v2", "big_number", b"\x00" + body([1, 4], [1e38, -1e38, 3.5e38, 1e-45]))
    put("fuzz_v2", "deep", b"\x00" + body([1, 4], [[[[[[[1]]]]]], 2, 3, 4]))


def main():
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    corpus_img()
    corpus_body()
    corpus_query()
    corpus_safetensors()
    corpus_idx()
    corpus_model_json()
    corpus_multipart()
    corpus_paths()
    corpus_v2()


if __name__ == "__main__":
    main()
