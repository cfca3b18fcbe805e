#!/usr/bin/env bash
# Build the libFuzzer targets (tests/fuzz) with clang into build-fuzz, replay each
# committed corpus, then fuzz each target for FUZZ_SECONDS (default 600) under
# ASan+UBSan+LSan. `make fuzz` runs this; scripts/test-fuzz.sh runs it for 20 s
# a target in `make test`. Targets run FUZZ_PARALLEL at a time (default 2), each
# one process, niced. The corpus grows in FUZZ_WORK/<target>/corpus (default
# build-fuzz/fuzz-work, kept between runs), never in the tree; a crash, leak,
# UB report or timeout fails the run, its input kept in FUZZ_WORK/<target>/artifacts
# (add it to tests/fuzz/corpus/<target>/ once fixed). Last line per target:
# executions, coverage (cov, ft) and corpus size.
#   scripts/fuzz.sh [target ...]      (default: every target)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BUILD_FUZZ:-build-fuzz}
secs=${FUZZ_SECONDS:-600}
par=${FUZZ_PARALLEL:-2}
work=${FUZZ_WORK:-$out/fuzz-work}
all=(fuzz_img fuzz_body fuzz_query fuzz_multipart fuzz_v2 fuzz_safetensors fuzz_idx fuzz_model_json fuzz_paths)
targets=("${@:-${all[@]}}")

# Per target: the dictionary and the largest input (bytes).
opts() {
  case $1 in
    fuzz_img) echo "-dict=tests/fuzz/fuzz_img.dict -max_len=16384" ;;
    fuzz_body | fuzz_v2) echo "-dict=tests/fuzz/fuzz_json.dict -max_len=16384" ;;
    fuzz_multipart) echo "-dict=tests/fuzz/fuzz_multipart.dict -max_len=16384" ;;
    fuzz_query) echo "-dict=tests/fuzz/fuzz_query.dict -max_len=1024" ;;
    fuzz_safetensors | fuzz_model_json) echo "-dict=tests/fuzz/fuzz_json.dict -max_len=4096" ;;
    fuzz_paths) echo "-dict=tests/fuzz/fuzz_paths.dict -max_len=1024" ;;
    *) echo "-max_len=4096" ;;
  esac
}

if ! command -v clang >/dev/null; then
  echo "fuzz: clang is missing (scripts/install-deps.sh installs clang and libclang-rt-14-dev)" >&2
  exit 1
fi
CC=clang CXX=clang++ cmake -S . -B "$out" -DLOUPE_FUZZ=ON -DLOUPE_WITH_TORCH=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$out" -j "${JOBS:-$(nproc)}" --target fuzz_targets >/dev/null

export ASAN_OPTIONS="detect_leaks=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"

# Replay the committed corpus, then fuzz a copy of it. Output in $work/$t/log.
run_one() {
  local t=$1 d="$work/$1"
  mkdir -p "$d/corpus" "$d/artifacts"
  cp -n tests/fuzz/corpus/"$t"/* "$d/corpus/" 2>/dev/null || true
  # shellcheck disable=SC2046
  if ! "$out/tests/fuzz/$t" $(opts "$t") -runs=0 -artifact_prefix="$d/artifacts/" \
        tests/fuzz/corpus/"$t" >"$d/replay.log" 2>&1; then
    echo "$t: FAILED replaying tests/fuzz/corpus/$t (see $d/replay.log)"
    tail -n 30 "$d/replay.log"
    return 1
  fi
  # shellcheck disable=SC2046
  if ! nice -n 10 "$out/tests/fuzz/$t" $(opts "$t") -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 \
        -close_fd_mask=2 -print_final_stats=1 -artifact_prefix="$d/artifacts/" "$d/corpus" >"$d/log" 2>&1; then
    echo "$t: FAILED (see $d/log; inputs in $d/artifacts)"
    grep -E "ERROR|SUMMARY|runtime error" "$d/log" | head -n 10
    return 1
  fi
  local last
  last=$(grep -E "^#[0-9]+" "$d/log" | tail -n 1)
  echo "$t: ok, ${secs}s: $(grep -o 'number_of_executed_units: *[0-9]*' "$d/log" | grep -o '[0-9]*$') runs," \
       "$(echo "$last" | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*')"
}

fail=0
pids=()
names=()
for t in "${targets[@]}"; do
  if [[ ! -x $out/tests/fuzz/$t ]]; then
    echo "fuzz: no target $t (known: ${all[*]})" >&2
    exit 2
  fi
  while (($(jobs -rp | wc -l) >= par)); do wait -n || fail=1; done
  run_one "$t" &
  pids+=($!)
  names+=("$t")
done
for p in "${pids[@]}"; do wait "$p" || fail=1; done
exit $fail
