#!/usr/bin/env bash
# `make test`'s ThreadSanitizer pass over the concurrent code: the work queue's and the MLP's unit
# tests (threads sharing one network's forward pass and its transposed weights, the training team) and the
# daemon's execution and HTTP integration tests against a TSan build of `loupe serve`.
# It reuses the model store the main build's tests made (build/tests/integration/store): training
# under TSan takes minutes. A data race makes the daemon exit non-zero (halt_on_error), which
# fails the test that stops it. Signal tests (Drain, Reload) are left out: TSan's own thread does
# not block SIGTERM, so a signal can kill the process before the daemon's sigwait sees it.
set -euo pipefail
cd "$(dirname "$0")/.."
main=${1:-build}
out=build-tsan
store="$main/tests/integration/store"
if [[ ! -f $store/alpha/model.json ]]; then
  echo "test-tsan: no model store in $store (run the main tests first)" >&2
  exit 1
fi
cmake -S . -B "$out" -DCMAKE_BUILD_TYPE=Debug -DLOUPE_TSAN=ON -DLOUPE_WITH_TORCH=OFF -DLOUPE_WERROR=ON >/dev/null
cmake --build "$out" -j "${JOBS:-$(nproc)}" --target loupe test_core test_mlp >/dev/null
export TSAN_OPTIONS="halt_on_error=1 exitcode=66 ${TSAN_OPTIONS:-}"
export LOUPE_BIN="$out/cli/loupe" LOUPE_STORE="$store" LOUPE_QUICK=1
"$out/core/test_core"
"$out/tests/unit/test_mlp"
/usr/bin/python3 tests/integration/test_exec.py
/usr/bin/python3 tests/integration/test_server.py Routes Inputs BadInput V2 Metrics
# The connection reaper thread against the connection threads: deadlines, per-address counts, body budget.
/usr/bin/python3 tests/integration/test_security.py Limits ApiToken
# This build has no libtorch (the ASan one has): a TorchScript folder is refused with a clear line.
/usr/bin/python3 tests/integration/test_cnn.py NoTorch
echo "test-tsan: 0 data races"
