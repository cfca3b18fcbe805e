#!/usr/bin/env bash
# Train the full-width VGG16 recipe on one GPU and leave its checkpoint,
# history and metrics in $OUT. Run from the repository root on a box with
# PyTorch 2.x + CUDA (no Debian packages needed: torchvision and tqdm are
# optional) and the four Fashion-MNIST .gz files under data/fashion-mnist/.
#
#   OUT=/path/to/out bash training/gpu_job.sh [extra train_vgg.py options]
#
# Recipe: VGG16 with BN at width 1 (15M parameters), batch 256, SGD Nesterov
# lr 0.2 one-cycle, label smoothing 0.1, shift 2 + flip + cutout 0.5,
# bfloat16 autocast and channels-last; the schedule is driven by a 6-minute
# time budget (it anneals to the end whatever the GPU's speed), so the whole
# job takes about 7 minutes. Aim: 95% test accuracy.
#
# Afterwards, on the serving machine (Debian's torch 1.13):
#   python3 training/export_vgg.py OUT/vgg16-w100/checkpoint.pt models/vgg16-w100
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:?set OUT to the folder to write into}
PYTHON=${PYTHON:-python3}
DATA=${DATA:-data/fashion-mnist}
BUDGET=${BUDGET:-6}

for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz \
         t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  [[ -f $DATA/$f ]] || { echo "gpu_job: $DATA/$f is missing" >&2; exit 2; }
done
"$PYTHON" -c 'import numpy, torch' || {
  echo "gpu_job: $PYTHON needs torch and numpy" >&2; exit 2; }
mkdir -p "$OUT"
"$PYTHON" - <<'PY' | tee "$OUT/environment.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0),
          "bf16", torch.cuda.is_bf16_supported())
PY

"$PYTHON" training/train_vgg.py \
  --data "$DATA" --out "$OUT/vgg16-w100" --name vgg16-w100 \
  --depth 16 --width 1 --batch-size 256 --lr 0.2 --weight-decay 5e-4 \
  --schedule onecycle --warmup 0.15 --label-smoothing 0.1 \
  --shift 2 --flip --erase 0.5 --budget-minutes "$BUDGET" \
  --device "${DEVICE:-cuda}" --no-export --quiet "$@" 2>&1 | tee "$OUT/train.log"
ls -la "$OUT/vgg16-w100"
