#!/usr/bin/env bash
# Execution-core benchmark: the daemon's lanes and dynamic batching against the
# parent commit's daemon, in one run. bench/exec_report.py prints the report at
# the end and writes it to bench/results/exec-<UTC date>.txt.
#
# 1. Builds: the parent commit's `loupe` (LOUPE_BASE, default eaca89f: a git
#    worktree in a temp dir, Release, target loupe; the binary is cached under
#    /tmp/loupe-exec-cache/base-<sha> and reused while the ref names the same
#    commit) and this tree's (LOUPE_BIN=PATH to bring one; default: built the
#    same way into /tmp/loupe-exec-cache/new, incrementally).
# 2. Models in a temp store: the MLP of `make run` (relu; --mlp-epochs, default
#    2, instead of 20) and VGG16-BN at width 0.25 (training/train_vgg.py, one
#    epoch on --vgg-images training images: the architecture is what costs).
# 3. Prints the load average, the CPU and the BLAS settings the daemons run
#    under (their environment, the OpenBLAS they mapped, the thread counts).
# 4. Throughput: wrk, --connections (64) keep-alive connections, 2 threads,
#    POSTs a PNG (28x28 to the MLP, the VGG's input size to the VGG) to
#    /v1/models/M/predict for --duration seconds after a --warmup: this tree
#    with --max-batch 1 and with its defaults on both models, the parent on the
#    MLP; every daemon with its default --threads. --rounds rounds, the second
#    in the reverse order. Mean batch size from /metrics. Any non-2xx answer or
#    socket error fails the run (exit 1, after the report).
# 5. Worst case: 8 clients POST a ~40 KB PNG declaring 39,999,999 x 1 pixels to
#    the MLP in a loop while two measurers time /healthz and a 28x28 predict,
#    one request every --flood-gap-ms after the last answer (bench/exec_flood.py),
#    this tree then the parent, --flood-duration s each.
# 6. Sweep (skip with --no-sweep): the VGG's forward pass alone by batch size
#    (bench/exec_passes.py; also with glibc's mmap threshold at 32 MiB), then
#    the daemon on the VGG with --max-batch 1/8/16/32/64 at --batch-delay-us 0,
#    then delays 500 and 2000 at the best of those --max-batch values,
#    --sweep-duration s each.
# A daemon that dies is a failure too; its log's start and end are kept in
# bench/results/.
# Everything listens on 127.0.0.1; processes started here are stopped on exit.
#
# usage: LOUPE_BASE=<ref> LOUPE_BIN=<path> bench/exec.sh [--duration 15] [--warmup 3]
#          [--rounds 2] [--connections 64] [--flood-duration 15] [--flood-gap-ms 5]
#          [--sweep-duration 8] [--no-sweep | --sweep] [--mlp-epochs 2] [--vgg-images 1024]
#          [--daemon-env "VAR=VALUE ..."] [--out FILE]
#   --daemon-env  variables set for every daemon of both builds (an experiment, e.g.
#                 MALLOC_MMAP_THRESHOLD_=33554432); printed in the report
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
py=/usr/bin/python3 # Debian's, with numpy and torch
duration=15
warmup=3
rounds=2
conns=64
flood_duration=15
flood_gap_ms=5
sweep_duration=8
sweep=1
mlp_epochs=2
vgg_images=1024
out=""
daemon_env=""
cache=/tmp/loupe-exec-cache
base_ref=${LOUPE_BASE:-eaca89f}
cmdline="bench/exec.sh$( (($#)) && printf ' %q' "$@")"
[[ -n ${LOUPE_BIN:-} ]] && cmdline="LOUPE_BIN=$LOUPE_BIN $cmdline"
[[ -n ${LOUPE_BASE:-} ]] && cmdline="LOUPE_BASE=$LOUPE_BASE $cmdline"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
while (($#)); do
  case $1 in
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --connections) conns=$2; shift 2 ;;
    --flood-duration) flood_duration=$2; shift 2 ;;
    --flood-gap-ms) flood_gap_ms=$2; shift 2 ;;
    --sweep-duration) sweep_duration=$2; shift 2 ;;
    --sweep) sweep=1; shift ;;
    --no-sweep) sweep=0; shift ;;
    --mlp-epochs) mlp_epochs=$2; shift 2 ;;
    --vgg-images) vgg_images=$2; shift 2 ;;
    --daemon-env) daemon_env=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "exec.sh: unknown option $1 (--help lists them)" >&2; exit 2 ;;
  esac
done

say() { printf '[exec %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
load_start=$(loadavg)
t_start=$SECONDS
date_tag=$(date -u +%Y-%m-%dT%H%MZ)
mkdir -p "$here/results"

# wrk as serve.sh expects it: Debian's package, installed as scripts/install-deps.sh does.
if ! command -v wrk >/dev/null; then
  say "wrk is missing: apt-get install wrk"
  sudo=""
  [[ $(id -u) != 0 ]] && sudo=sudo
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends wrk ||
    { DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends wrk; }
fi

tmp=$(mktemp -d /tmp/loupe-exec.XXXXXX)
daemon_pid="" worktree=""
cleanup() {
  [[ -n $daemon_pid ]] && kill "$daemon_pid" 2>/dev/null
  wait 2>/dev/null
  [[ -n $worktree ]] && git -C "$root" worktree remove --force "$worktree" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ==== Builds ====

build() { # source-dir build-dir log
  { cmake -S "$1" -B "$2" -DCMAKE_BUILD_TYPE=Release && cmake --build "$2" -j"$(nproc)" --target loupe; } >"$3" 2>&1 ||
    { tail -30 "$3" >&2; say "the build in $2 failed (log: $3)"; exit 1; }
}

mkdir -p "$cache"
base_sha=$(git -C "$root" rev-parse --verify "$base_ref^{commit}")
base_dir=$cache/base-${base_sha:0:12}
base_bin=$base_dir/build/cli/loupe
if [[ -x $base_bin && -f $base_dir/done ]]; then
  say "parent build: cached $base_bin ($base_ref = ${base_sha:0:12})"
else
  say "parent build: $base_ref = ${base_sha:0:12} into $base_dir (a few minutes)"
  rm -rf "$base_dir"
  mkdir -p "$base_dir"
  worktree=$base_dir/src
  git -C "$root" worktree add --detach --quiet "$worktree" "$base_sha"
  build "$worktree" "$base_dir/build" "$base_dir/build.log"
  git -C "$root" worktree remove --force "$worktree"
  worktree=""
  touch "$base_dir/done"
fi

if [[ -n ${LOUPE_BIN:-} ]]; then
  new_bin=$(cd "$(dirname "$LOUPE_BIN")" && pwd)/$(basename "$LOUPE_BIN")
  [[ -x $new_bin ]] || { say "LOUPE_BIN=$LOUPE_BIN is not an executable"; exit 2; }
  say "this tree's build: $new_bin (LOUPE_BIN)"
else
  say "this tree's build: $root into $cache/new"
  build "$root" "$cache/new" "$cache/new.log"
  new_bin=$cache/new/cli/loupe
fi
new_desc="$(git -C "$root" rev-parse --short=12 HEAD)$(git -C "$root" diff --quiet HEAD -- . 2>/dev/null || echo ' + uncommitted changes')"

# ==== Models and inputs ====

say "training the MLP: loupe train-mlp --activation relu --epochs $mlp_epochs"
mkdir -p "$tmp/store-mlp" "$tmp/store-vgg" "$tmp/in"
"$new_bin" train-mlp --activation relu --epochs "$mlp_epochs" --quiet --out "$tmp/store-mlp/mlp" \
  >"$tmp/train-mlp.log" 2>&1 || { cat "$tmp/train-mlp.log" >&2; exit 1; }
say "training VGG16-BN w0.25: train_vgg.py --epochs 1 --train-subset $vgg_images"
(cd "$root" && "$py" training/train_vgg.py --width 0.25 --epochs 1 --train-subset "$vgg_images" \
  --val-subset 128 --test-subset 128 --quiet --out "$tmp/store-vgg/vgg16-w25") \
  >"$tmp/train-vgg.log" 2>&1 || { cat "$tmp/train-vgg.log" >&2; exit 1; }
"$py" "$here/exec_inputs.py" "$tmp/in" --model-json "$tmp/store-vgg/vgg16-w25/model.json" >"$tmp/inputs.txt"
vgg_side=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["input"]["height"])' \
  "$tmp/store-vgg/vgg16-w25/model.json")
vgg_png=$tmp/in/in$vgg_side.png

# ==== Daemons ====

free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# The daemon reads LOUPE_* variables as options: none of the caller's may leak into a run.
clean_env=()
while read -r v; do clean_env+=(-u "$v"); done < <(compgen -e | grep '^LOUPE_' || true)
read -r -a extra_env <<<"$daemon_env"

# Starts bin on store with the given flags; sets port and daemon_pid; waits
# until a predict of png on model answers 200 (VGG: loading and warm-up).
start_daemon() { # name bin store model png flag...
  local name=$1 bin=$2 store=$3 model=$4 png=$5 i
  shift 5
  port=$(free_port)
  env "${clean_env[@]}" "${extra_env[@]}" "$bin" serve --host 127.0.0.1 --port "$port" --models "$store" --drain-grace 0 \
    "$@" 2>"$tmp/$name.log" &
  daemon_pid=$!
  for ((i = 0; i < 600; i++)); do
    curl -sf -o /dev/null --max-time 5 --data-binary @"$png" -H 'Content-Type: image/png' \
      "http://127.0.0.1:$port/v1/models/$model/predict" && return 0
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.1
  done
  say "exec.sh: $name never answered; its log:"; cat "$tmp/$name.log" >&2; exit 1
}
# Stops the daemon; one that died on its own (a signal, or an exit other than
# SIGTERM's drain) is a crash: its log goes to bench/results/ and the report
# fails.
stop_daemon() { # name
  local st=0
  kill "$daemon_pid" 2>/dev/null || true
  wait "$daemon_pid" 2>/dev/null || st=$?
  daemon_pid=""
  if ((st != 0 && st != 143)); then
    # Its start and its last moments (the access log of every request before is left out).
    { head -3 "$tmp/$1.log"; echo "[... access-log lines left out ...]"; tail -100 "$tmp/$1.log"; } \
      >"$here/results/exec-$date_tag-$1.log"
    printf '%s\t%s\t%s\n' "$1" "$st" "bench/results/exec-$date_tag-$1.log" >>"$tmp/crashes.tsv"
    say "the daemon of $1 died (exit status $st); its log: bench/results/exec-$date_tag-$1.log"
  fi
}

# What BLAS the running daemon has: its environment's BLAS/OpenMP/Loupe
# variables, the BLAS and libtorch libraries it mapped, its thread count.
blas_of() { # label
  local env_vars libs
  env_vars=$(tr '\0' '\n' <"/proc/$daemon_pid/environ" | grep -E '^(OPENBLAS|GOTO|OMP|MKL|LOUPE_BLAS|MALLOC)' | tr '\n' ' ')
  libs=$(awk '$6 ~ /(blas|torch_cpu)/ { print $6 }' "/proc/$daemon_pid/maps" | sort -u | tr '\n' ' ')
  printf '%s\tenv: %s\tmapped: %s\tthreads after start: %s\n' "$1" "${env_vars:-(none)}" "${libs:-(none)}" \
    "$(ls "/proc/$daemon_pid/task" | wc -l)" >>"$tmp/blas.txt"
}

metrics() { curl -sf --max-time 10 "http://127.0.0.1:$port/metrics" || true; }

# One wrk run against the running daemon: a warm-up, then the timed run with
# /metrics before and after; a line in the manifest for exec_report.py.
wrk_run() { # id phase round build model config png
  local id=$1 url="http://127.0.0.1:$port/v1/models/$5/predict"
  PNG=$7 wrk -t2 -c"$conns" -d"$warmup"s --timeout 5s -s "$here/serve_post.lua" "$url" >"$tmp/$id.warm" 2>&1 || true
  metrics >"$tmp/$id.before"
  local load
  load=$(loadavg)
  PNG=$7 wrk -t2 -c"$conns" -d"$2"s --timeout 5s --latency -s "$here/serve_post.lua" "$url" >"$tmp/$id.wrk" 2>&1 ||
    say "wrk failed in $id (see the report)"
  metrics >"$tmp/$id.after"
  # The most images per libtorch call, when the daemon's warm-up chose one (its log says).
  local cap
  cap=$(sed -n 's/.*, \([0-9]*\) images per pass at most.*/\1/p' "$tmp/$id.log" | head -1)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "${phase}" "$3" "$4" "$5" "$6" "$load" "${cap:--}" \
    >>"$tmp/manifest.tsv"
}

# A throughput run: a fresh daemon, wrk, the daemon stopped.
bench() { # round build model config flag...
  local round=$1 build=$2 model=$3 config=$4 bin store png id
  shift 4
  [[ $build == new ]] && bin=$new_bin || bin=$base_bin
  [[ $model == mlp ]] && { store=$tmp/store-mlp; png=$tmp/in/in28.png; } ||
    { store=$tmp/store-vgg; png=$vgg_png; }
  id=$phase-r$round-$build-$model-${config// /_}
  say "$phase round $round: $build build, $model, $config (load $(loadavg))"
  start_daemon "$id" "$bin" "$store" "$model" "$png" "$@"
  [[ -f $tmp/blas-$build-$model ]] || { blas_of "$build build, $model"; touch "$tmp/blas-$build-$model"; }
  wrk_run "$id" "$run_duration" "$round" "$build" "$model" "$config" "$png"
  stop_daemon "$id"
}

: >"$tmp/manifest.tsv"

# ==== Throughput: batching on and off, this tree against the parent ====

phase=main run_duration=$duration
runs=("new mlp max-batch 1|--max-batch 1" "new mlp defaults|" "base mlp defaults|"
      "new vgg16-w25 max-batch 1|--max-batch 1" "new vgg16-w25 defaults|")
for ((r = 1; r <= rounds; r++)); do
  order=("${runs[@]}")
  if ((r % 2 == 0)); then
    order=()
    for ((i = ${#runs[@]} - 1; i >= 0; i--)); do order+=("${runs[i]}"); done
  fi
  for spec in "${order[@]}"; do
    read -r b m c <<<"${spec%%|*}"
    flags=${spec#*|}
    # shellcheck disable=SC2086 # flags is a list of words
    bench "$r" "$b" "$m" "$c" $flags
  done
done

# ==== Worst case: a flood of decompression bombs ====

for build in new base; do
  [[ $build == new ]] && bin=$new_bin || bin=$base_bin
  say "flood: $build build, 8 clients of bomb.png for $flood_duration s (load $(loadavg))"
  start_daemon "flood-$build" "$bin" "$tmp/store-mlp" mlp "$tmp/in/in28.png"
  echo "LOAD $(loadavg)" >"$tmp/flood-$build.out"
  "$py" "$here/exec_flood.py" --port "$port" --model mlp --bomb "$tmp/in/bomb.png" --png "$tmp/in/in28.png" \
    --clients 8 --duration "$flood_duration" --gap-ms "$flood_gap_ms" >>"$tmp/flood-$build.out"
  stop_daemon "flood-$build"
done

# ==== Sweep: batching defaults on the VGG ====

if ((sweep)); then
  say "the VGG's forward pass alone by batch size (torch, 1 thread)"
  "$py" "$here/exec_passes.py" "$tmp/store-vgg/vgg16-w25" >"$tmp/passes.out" 2>&1 || true
  # The same with glibc's malloc keeping large blocks in the heap instead of a
  # fresh mmap (and its page faults) for each activation tensor of each pass.
  MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=134217728 \
    "$py" "$here/exec_passes.py" "$tmp/store-vgg/vgg16-w25" >"$tmp/passes-malloc.out" 2>&1 || true
  phase=sweep run_duration=$sweep_duration
  for mb in 1 8 16 32 64; do
    bench 1 new vgg16-w25 "max-batch $mb delay 0" --max-batch "$mb" --batch-delay-us 0
  done
  # The delays at the best --max-batch of the runs above (exec_report.py's rule).
  mb=$("$py" "$here/exec_report.py" "$tmp" --pick-max-batch)
  for delay in 500 2000; do
    bench 1 new vgg16-w25 "max-batch $mb delay $delay" --max-batch "$mb" --batch-delay-us "$delay"
  done
fi

# ==== Report ====

[[ -n $out ]] || out=$here/results/exec-$date_tag.txt
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
# Does serve set one BLAS thread at start (source), and its thread defaults (--help)?
serve_blas() { # yes|no
  [[ $1 == yes ]] && echo "openblas_set_num_threads(1) at start" || echo "no BLAS thread setting found in server/ or cli/"
}
new_blas=$(serve_blas "$(grep -rqF 'blas_env_set_threads(1)' "$root/server" "$root/cli" && echo yes || echo no)")
base_blas=$(serve_blas "$(git -C "$root" grep -qF 'blas_env_set_threads(1)' "$base_sha" -- server cli && echo yes || echo no)")
thread_defaults() { # bin
  "$1" serve --help 2>&1 | grep -E '^ *--(threads|workers|torch-threads|max-batch|batch-delay-us) ' |
    sed -E 's/^ *(--[a-z-]+) .*\((default:? [^)]*)\).*/\1 \2/' | tr '\n' ';' | sed 's/;$//; s/;/; /g'
}
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "command: $cmdline"
  echo "machine: $(nproc) cores ($cpu), $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo)"
  echo "load average at start: $load_start; at the report: $(loadavg); run took $((SECONDS - t_start)) s"
  echo "new build: $new_bin ($new_desc); serve: $new_blas"
  echo "parent build: $base_bin ($base_ref = ${base_sha:0:12}); serve: $base_blas"
  echo "new build's serve --help: $(thread_defaults "$new_bin")"
  echo "parent build's serve --help: $(thread_defaults "$base_bin")"
  while IFS=$'\t' read -r label e m t; do echo "BLAS, $label: $e; $m; $t"; done <"$tmp/blas.txt"
  echo "models: mlp (train-mlp --activation relu --epochs $mlp_epochs), vgg16-w25 (train_vgg.py --width 0.25 --epochs 1 --train-subset $vgg_images)"
  echo "inputs (bytes): $(tr '\n' ' ' <"$tmp/inputs.txt")"
  echo "wrk: -t2 -c$conns, $warmup s of warm-up then $duration s per run, $rounds round(s), every other one in reverse order; sweep $sweep_duration s per run"
  echo "flood: 8 bomb clients, measurers with $flood_gap_ms ms between requests, $flood_duration s"
  [[ -z $daemon_env ]] || echo "every daemon ran with: $daemon_env"
} >"$tmp/header.txt"
rc=0
"$py" "$here/exec_report.py" "$tmp" --out "$out" || rc=$?
say "report written to $out"
exit "$rc"
