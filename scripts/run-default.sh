#!/usr/bin/env bash
# `make run`: serve the model store (LOUPE_MODELS, default models/) with --watch, so that what is
# trained into it is served once written. Trains what is missing:
#   - the default MLP (mlp-relu, about half a minute), in the foreground: served as soon as it is;
#   - a small CNN of the VGG family (vgg11-w25, a few minutes), in the background, by
#     training/train_vgg.py; its log is <store>/.training/vgg11-w25.log, its progress
#     <store>/.training/vgg11-w25.json (GET /v1/training, and the page, show it).
# A second run finds both and trains nothing. LOUPE_RUN_CNN=0 skips the CNN.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
loupe="$build/cli/loupe"
models=${LOUPE_MODELS:-models}
default="$models/mlp-relu"
cnn_name=vgg11-w25
cnn="$models/$cnn_name"
status_dir="$models/.training"
python=${PYTHON:-/usr/bin/python3}
# The CNN's recipe: the default one (docs/vgg.md), shortened: VGG11 instead of VGG16, and the
# schedule ended by the clock (annealed) after CNN_MINUTES minutes or CNN_EPOCHS epochs,
# whichever comes first: on 2 cores with AVX2 kernels (oneDNN and ATen limited to AVX2) an epoch
# took 30-40 s, the 8 epochs ended it, 92.5% test accuracy, served 4 min 52 s after the start.
cnn_minutes=${LOUPE_CNN_MINUTES:-6}
cnn_epochs=${LOUPE_CNN_EPOCHS:-8}

if [[ ! -f $default/weights.safetensors ]]; then
  echo "make run: training the default MLP into $default (relu, 20 epochs, about half a minute)"
  # Line-buffered, so each epoch shows as it ends (stdio buffers a pipe otherwise).
  line=(); command -v stdbuf >/dev/null && line=(stdbuf -oL)
  "${line[@]}" "$loupe" train-mlp --activation relu --epochs 20 --out "$default" 2>&1 |
    awk '/^epoch/ { if (++n % 5 == 0) print "  mlp-relu: " $0; fflush(); next } { print "  mlp-relu: " $0; fflush() }'
fi

# ==== the CNN, in the background ====
trainer=
if [[ ${LOUPE_RUN_CNN:-1} != 0 && ! -f $cnn/model.ts ]]; then
  if "$python" -c 'import torch' 2>/dev/null; then
    mkdir -p "$status_dir"
    log="$status_dir/$cnn_name.log"
    echo "make run: training a small CNN ($cnn_name) in the background, about $(awk -v m="$cnn_minutes" 'BEGIN { printf "%d", m + 1.5 }') minutes;"
    echo "          served once written (log: $log)"
    # Its own process group: Ctrl-C here stops it through the trap below, not by the terminal's signal.
    setsid "$python" training/train_vgg.py --depth 11 --width 0.25 --epochs "$cnn_epochs" \
      --budget-minutes "$cnn_minutes" --name "$cnn_name" --out "$cnn" --status "$status_dir/$cnn_name.json" \
      --quiet >"$log" 2>&1 &
    trainer=$!
  else
    echo "make run: no CNN: $python has no torch (scripts/install-deps.sh installs python3-torch)"
  fi
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
# The daemon's own log (start-up, reloads, one line per request) goes to a file.
serve_log="$build/serve.log"
# Interactive: Ctrl-C stops at once unless LOUPE_DRAIN_GRACE says otherwise.
LOUPE_DRAIN_GRACE=${LOUPE_DRAIN_GRACE:-0} "$loupe" serve --models "$models" --port "$port" \
  --watch "${LOUPE_WATCH:-2}" >"$serve_log" 2>&1 &
pid=$!
stop() {
  if [[ -n $trainer ]] && kill -0 "$trainer" 2>/dev/null; then
    kill -TERM -- "-$trainer" 2>/dev/null || true
    wait "$trainer" 2>/dev/null || true
    rm -f "$status_dir/$cnn_name.json"
    echo "make run: stopped the CNN's training; the next make run starts it again"
  fi
  kill -TERM $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
  exit 0
}
trap stop INT TERM
for _ in $(seq 100); do
  if curl -sf "localhost:$port/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 $pid 2>/dev/null; then cat "$serve_log" >&2; wait $pid; exit $?; fi
  sleep 0.1
done
cat <<EOT

  Loupe is serving on http://localhost:$port/   (API: docs/api.md; log: $serve_log; Ctrl-C stops it)

  Paste this to classify a sample image:

    curl --data-binary @$sample localhost:$port/predict

EOT

# ==== the CNN's progress, a line a minute, until it is served ====
if [[ -n $trainer ]]; then
  last=0
  while kill -0 "$trainer" 2>/dev/null; do
    sleep 5
    now=$(date +%s)
    ((now - last >= 60)) || continue
    last=$now
    line=$("$python" - "$status_dir/$cnn_name.json" <<'PY' 2>/dev/null || true
import json, sys
s = json.load(open(sys.argv[1]))
eta = s.get("eta_seconds")
left = ("" if eta is None else ", ready in less than a minute" if eta < 60
        else ", ready in about %d min" % round(eta / 60))
of = "/%d" % s["epochs"] if s.get("epochs") else ""
print("epoch %d%s (%s)%s" % (s["epoch"], of, s["phase"], left))
PY
)
    [[ -n $line ]] && echo "  $cnn_name: $line"
  done
  if wait "$trainer"; then
    acc=$(grep -o 'test accuracy [0-9.]*' "$status_dir/$cnn_name.log" | tail -1 | awk '{printf "%.1f%%", $3 * 100}')
    # --watch picks the folder up within seconds; say so once it is served.
    for _ in $(seq 60); do
      if curl -sf "localhost:$port/v1/models/$cnn_name" >/dev/null 2>&1; then
        echo "  $cnn_name: trained (test accuracy $acc) and served: http://localhost:$port/"
        break
      fi
      sleep 1
    done
  else
    echo "  $cnn_name: training failed; see $status_dir/$cnn_name.log" >&2
  fi
  trainer=
fi
wait $pid
