#!/usr/bin/env bash
# Build one target of the Dockerfile with podman and run it as a container runtime would
# (tests/image/test_image.py): HEALTHCHECK, /predict, the image's user, SIGTERM, read-only root.
#   scripts/test-image.sh [TARGET [TAG]]   TARGET: default (libtorch; `make image-test`), slim, trainer
# Needs root and podman (`podman run` cannot start containers on these machines: the test mounts the
# image and chroots into it, in a network namespace of its own). LOUPE_IMAGE_NO_BUILD=1 tests TAG as it is.
# The default target is also run on a mounted store holding a tiny VGG (TorchScript, trained here).
# Prints the minutes the build and the test took and the image's size.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-default}
tag=${2:-localhost/loupe:$target}
kind=serve
[[ $target == trainer ]] && kind=trainer

t0=$(date +%s)
if [[ ${LOUPE_IMAGE_NO_BUILD:-} != 1 ]]; then
  LOUPE_IMAGE_BUILDER=podman scripts/build-image.sh "$target" "$tag"
fi
t1=$(date +%s)
extra=()
if [[ $target == default ]]; then
  # The libtorch image must also load and run a CNN: a tiny VGG trained here by the real trainer
  # (as tests/integration/test_cnn.py makes it), served from a store mounted over /models.
  work=$(mktemp -d /tmp/loupe-image-cnn.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  /usr/bin/python3 training/train_vgg.py --width 0.0625 --epochs 1 --train-subset 512 --val-subset 128 \
    --test-subset 128 --threads 1 --quiet --out "$work/tiny-vgg"
  extra=(--mount-model "$work/tiny-vgg")
fi
unshare --net /usr/bin/python3 tests/image/test_image.py --kind "$kind" "${extra[@]}" "$tag"
t2=$(date +%s)
size=$(podman image inspect --format '{{.Size}}' "$tag")
awk -v b=$((t1 - t0)) -v t=$((t2 - t1)) -v s="$size" -v tag="$tag" 'BEGIN {
  printf "test-image: %s: %.0f MB; build %.1f min, test %.1f min, %.1f min in all\n", tag, s / 1e6, b / 60, t / 60, (b + t) / 60 }'
