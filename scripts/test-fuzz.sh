#!/usr/bin/env bash
# `make test`'s fuzz pass: every libFuzzer target (tests/fuzz) replays its committed
# corpus and then fuzzes for 20 s (FUZZ_SECONDS) under ASan+UBSan, two at a time,
# on a scratch copy of its corpus (the tree stays as it was). About 3 minutes on
# 2 cores with the clang build. Any crash, leak or UB report fails it.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d "${TMPDIR:-/tmp}/loupe-test-fuzz.XXXXXX")
# Keep what failed (crash inputs) where the build is, then drop the scratch copy.
keep() {
  mkdir -p build-fuzz/test-fuzz-artifacts
  cp -r "$scratch"/fuzz_*/artifacts/. build-fuzz/test-fuzz-artifacts/ 2>/dev/null || true
  rm -rf "$scratch"
}
trap keep EXIT
start=$SECONDS
FUZZ_SECONDS=${FUZZ_SECONDS:-20} FUZZ_PARALLEL=${FUZZ_PARALLEL:-2} FUZZ_WORK="$scratch" TMPDIR="$scratch" scripts/fuzz.sh "$@"
echo "test-fuzz: every target clean ($((SECONDS - start)) s)"
