#!/usr/bin/env bash
# `make run`: train the default model into models/ if there is none, then serve it.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
loupe="$build/cli/loupe"
models=${LOUPE_MODELS:-models}
default="$models/mlp-relu"
if [[ ! -f $default/weights.safetensors ]]; then
  echo "make run: training the default model into $default (relu, 20 epochs, about half a minute)"
  "$loupe" train-mlp --activation relu --epochs 20 --out "$default"
fi

# ==== serving: start `loupe serve`, then print the URL and a curl line to paste ====
port=${LOUPE_PORT:-8080}
sample="$build/shoe.png"
if [[ ! -f $sample ]]; then
  # The first Fashion-MNIST test image (an ankle boot) as a PNG, with Python's standard library only.
  /usr/bin/python3 - "$sample" <<'PY'
import gzip, struct, sys, zlib
px = gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").read()[16:16 + 784]
raw = b"".join(b"\0" + px[28 * y:28 * y + 28] for y in range(28))
chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0))
                              + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
PY
fi
# Interactive: Ctrl-C stops at once unless LOUPE_DRAIN_GRACE says otherwise.
LOUPE_DRAIN_GRACE=${LOUPE_DRAIN_GRACE:-0} "$loupe" serve --models "$models" --port "$port" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid' INT TERM
for _ in $(seq 100); do
  if curl -sf "localhost:$port/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 $pid 2>/dev/null; then wait $pid; exit $?; fi
  sleep 0.1
done
cat <<EOT

  Loupe is serving on http://localhost:$port/   (API: docs/api.md; Ctrl-C stops it)

  Paste this to classify a sample image:

    curl --data-binary @$sample localhost:$port/predict

EOT
wait $pid
