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
