#!/usr/bin/env bash
# Build one target of the Dockerfile: with docker when its engine answers, else with podman.
#   scripts/build-image.sh [TARGET [TAG]]   TARGET: default (libtorch, the last stage), slim, trainer
#                                           TAG: default localhost/loupe:TARGET
# LOUPE_IMAGE_BUILDER=podman skips docker. Where ../shared/tools/container.sh exists (machines
# without a Docker engine, whose podman needs a locally made Debian base), podman goes through it.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-default}
tag=${2:-localhost/loupe:$target}
case $target in
  default|slim|trainer) ;;
  *) echo "usage: $0 [default|slim|trainer] [TAG]" >&2; exit 2 ;;
esac
if [[ ${LOUPE_IMAGE_BUILDER:-} != podman ]] && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  exec docker build --target "$target" -t "$tag" .
fi
if [[ -x ../shared/tools/container.sh ]]; then
  exec ../shared/tools/container.sh build "$tag" . -- --target "$target"
fi
command -v podman >/dev/null || { echo "build-image: neither a docker engine nor podman" >&2; exit 1; }
exec podman build --format docker --target "$target" -t "$tag" .
