#!/usr/bin/env bash
# Serving benchmark: `loupe serve` against the Python peer a user would write
# instead (bench/serve_peer.py: FastAPI under `uvicorn --workers 2`), in one run,
# with the same weights, the same 28x28 PNG and the same JSON answer.
#
# wrk (64 keep-alive connections, 2 threads, bench/serve_post.lua) POSTs the PNG
# as image/png to /v1/models/mlp/predict. In order: Loupe until its /metrics
# counts 100,000 predictions (the warm-up), its RSS; Loupe for --duration
# seconds; the peer for --warmup, then --duration seconds; Loupe again until
# 1,000,000 predictions in all, its RSS. bench/serve_report.py prints
# requests/s, p50/p99/max latency, errors, the servers' CPU per request and the
# time their threads waited for a CPU (the machine may be shared), Loupe's own
# timing from its histogram, the RSS change, and which targets were met.
# Everything listens on 127.0.0.1; every process started here is stopped on
# exit (an interrupt waits for a running timed wrk, at most --duration s).
# It builds nothing.
#
# usage: bench/serve.sh [--loupe build/cli/loupe] [--model DIR] [--duration 15]
#                       [--warmup 3] [--connections 64] [--threads N] [--kernels K]
#                       [--warm-requests 100000] [--total-requests 1000000]
#   --model DIR   an MLP model folder (default: `loupe train-mlp --epochs 1` into a temp dir)
#   --threads N   Loupe's --threads (default: the daemon's own default, the number of cores)
#   --kernels K   Loupe's MLP kernels (LOUPE_MLP_KERNELS: avx512, avx2, portable, dense;
#                 default: its automatic choice). avx2 and avx512 also set OPENBLAS_CORETYPE
#                 (Haswell, SkylakeX) for both servers: `--kernels avx2` measures an AVX2
#                 machine even on an AVX-512 one, the peer on the same BLAS kernel.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
loupe=$root/build/cli/loupe
model=""
duration=15
warmup=3
conns=64
threads=""
kernels=""
warm_requests=100000
total_requests=1000000
py=/usr/bin/python3 # Debian's, with numpy, Pillow, FastAPI and uvicorn

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
while (($#)); do
  case $1 in
    --loupe) loupe=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --connections) conns=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --kernels) kernels=$2; shift 2 ;;
    --warm-requests) warm_requests=$2; shift 2 ;;
    --total-requests) total_requests=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "serve.sh: unknown option $1 (--help lists them)" >&2; exit 2 ;;
  esac
done
case $kernels in
  avx512) export OPENBLAS_CORETYPE=SkylakeX ;;
  avx2) export OPENBLAS_CORETYPE=Haswell ;;
  ""|portable|dense) ;;
  *) echo "serve.sh: --kernels is avx512, avx2, portable or dense, not '$kernels'" >&2; exit 2 ;;
esac
[[ -x $loupe ]] || { echo "serve.sh: no loupe binary at $loupe (build it, or pass --loupe)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "serve.sh: wrk is missing (scripts/install-deps.sh)" >&2; exit 2; }

tmp=$(mktemp -d /tmp/loupe-bench.XXXXXX)
loupe_pid="" peer_pid="" wrk_pid=""
cleanup() {
  [[ -n $wrk_pid ]] && kill "$wrk_pid" 2>/dev/null
  [[ -n $loupe_pid ]] && kill "$loupe_pid" 2>/dev/null
  # uvicorn runs in its own session: its process group holds the parent and both workers.
  [[ -n $peer_pid ]] && kill -- "-$peer_pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*" >&2; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# ==== Model, store and input ====

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
load_start=$(loadavg)
say "machine: $(nproc) cores ($cpu), load average $load_start before starting"
# What the run computes with, as the report's machine line says it.
kernels_used=$(LOUPE_MLP_KERNELS=${kernels:-auto} "$loupe" --version 2>/dev/null |
  sed -n 's/^mlp kernels: \([a-z0-9]*\).*/\1/p')
cpu="$cpu; Loupe's MLP kernels ${kernels:-auto}${kernels_used:+ ($kernels_used)}, OpenBLAS ${OPENBLAS_CORETYPE:-its own choice} for both servers"
say "$cpu"

mkdir -p "$tmp/models"
if [[ -z $model ]]; then
  say "training a model: loupe train-mlp --epochs 1"
  "$loupe" train-mlp --epochs 1 --quiet --out "$tmp/models/mlp" >"$tmp/train.log" 2>&1 ||
    { cat "$tmp/train.log" >&2; exit 1; }
else
  ln -s "$(cd "$model" && pwd)" "$tmp/models/mlp"
fi
name=mlp

# The first Fashion-MNIST test image as an 8-bit grayscale 28x28 PNG.
"$py" - "$tmp/input.png" <<'EOF'
import gzip, sys
from PIL import Image
px = gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").read()[16:16 + 784]
Image.frombytes("L", (28, 28), px).save(sys.argv[1])
EOF
export PNG=$tmp/input.png

free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ==== Servers ====

lport=$(free_port)
LOUPE_MLP_KERNELS=${kernels:-auto} "$loupe" serve --host 127.0.0.1 --port "$lport" --models "$tmp/models" --drain-grace 0 \
  ${threads:+--threads "$threads"} 2>"$tmp/loupe.log" &
loupe_pid=$!

pport=$(free_port)
# One BLAS thread per worker, as Loupe sets its own: two workers on two cores.
LOUPE_MODELS=$tmp/models OPENBLAS_NUM_THREADS=1 setsid "$py" -m uvicorn --app-dir "$here" serve_peer:app \
  --host 127.0.0.1 --port "$pport" --workers 2 >"$tmp/peer.log" 2>&1 &
peer_pid=$!

loupe_url=http://127.0.0.1:$lport/v1/models/$name/predict
peer_url=http://127.0.0.1:$pport/v1/models/$name/predict

predict_class() {
  curl -sf --max-time 5 --data-binary @"$PNG" -H 'Content-Type: image/png' "$1" |
    "$py" -c 'import json, sys; d = json.load(sys.stdin); print(d["index"], d["class"], sep="\t")'
}
wait_ready() { # url log
  local i
  for ((i = 0; i < 300; i++)); do
    predict_class "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  say "serve.sh: no answer from $1 after 30 s; its log:"; cat "$2" >&2; exit 1
}
wait_ready "$loupe_url" "$tmp/loupe.log"
wait_ready "$peer_url" "$tmp/peer.log"

lc=$(predict_class "$loupe_url")
pc=$(predict_class "$peer_url")
say "loupe answers: ${lc/$'\t'/ }; the peer answers: ${pc/$'\t'/ }"
[[ $lc == "$pc" ]] || { say "serve.sh: the two servers disagree on the class"; exit 1; }

# ==== Load ====

# Nanoseconds the given processes' threads have run on a CPU, and waited on a
# run queue for one, so far (/proc/PID/task/*/schedstat).
sched_ns() {
  local pid
  for pid in "$@"; do cat /proc/"$pid"/task/*/schedstat 2>/dev/null; done |
    awk '{ run += $1; wait += $2 } END { printf "%.0f %.0f\n", run, wait }'
}
peer_pids() { pgrep -g "$peer_pid" | tr '\n' ' '; }

# wrk for a fixed time against url; writes its BENCH line, then the time the
# server's threads ran and waited for a CPU meanwhile, and wrk's own CPU seconds, to file.
run_wrk() { # url seconds file server-pid...
  local url=$1 secs=$2 out=$3 s0 s1 TIMEFORMAT='WRKCPU %U %S'
  shift 3
  s0=$(sched_ns "$@")
  { time wrk -t2 -c"$conns" -d"$secs"s --timeout 5s --latency -s "$here/serve_post.lua" "$url" \
      >"$out.wrk"; } 2>"$out.time"
  s1=$(sched_ns "$@")
  { grep '^BENCH' "$out.wrk"
    echo "$s0 $s1" | awk '{ printf "SCHED run_ns=%.0f wait_ns=%.0f\n", $3 - $1, $4 - $2 }'
    grep '^WRKCPU' "$out.time"; } >"$out"
}

metrics() { curl -sf --max-time 5 "http://127.0.0.1:$lport/metrics"; }

# Loupe's predict requests so far, all statuses, from its /metrics.
served() {
  metrics | awk '/^loupe_http_requests_total\{route="\/v1\/models\/\{m\}\/predict"/ { n += $NF }
                 END { printf "%d\n", n }'
}

# wrk against Loupe until /metrics counts at least N predict requests (at most
# 600 s); its BENCH line goes to the file. Not run in a subshell, so that the
# exit trap knows wrk's pid.
run_until() { # N file
  local out=$2 deadline=$((SECONDS + 600))
  wrk -t2 -c"$conns" -d600s --timeout 5s --latency -s "$here/serve_post.lua" "$loupe_url" >"$out" &
  wrk_pid=$!
  while (($(served) < $1)); do
    ((SECONDS < deadline)) && kill -0 "$wrk_pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -INT "$wrk_pid" 2>/dev/null || true
  wait "$wrk_pid" || true
  wrk_pid=""
  sleep 1 # connections closed, the pool idle
  echo "SERVED $(served) RSS $(awk '/^VmRSS:/ { print $2 }' "/proc/$loupe_pid/status")" >>"$out"
}

say "warm-up: Loupe until $warm_requests requests"
run_until "$warm_requests" "$tmp/wrk-warm.out"

say "measuring Loupe for $duration s (load average $(loadavg))"
echo "LOAD $(loadavg)" >"$tmp/load-loupe"
metrics >"$tmp/metrics-before"
run_wrk "$loupe_url" "$duration" "$tmp/loupe.out" "$loupe_pid"
metrics >"$tmp/metrics-after"

say "warm-up: the peer for $warmup s"
run_wrk "$peer_url" "$warmup" "$tmp/peer-warm.out" $(peer_pids)
say "measuring the peer for $duration s (load average $(loadavg))"
echo "LOAD $(loadavg)" >"$tmp/load-peer"
run_wrk "$peer_url" "$duration" "$tmp/peer.out" $(peer_pids)

say "memory: Loupe until $total_requests requests in all"
run_until "$total_requests" "$tmp/wrk-total.out"

# ==== Report ====

"$py" "$here/serve_report.py" "$tmp" --connections "$conns" --duration "$duration" --cpu "$cpu" \
  --load-start "$load_start"
