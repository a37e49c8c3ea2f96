#!/usr/bin/env bash
# Makes reports/h200-rpc-<date>/ on one GPU host (one call of under 10 minutes):
#   bench/h200-rpc.sh QUANTBENCH OUT
# starts two quantbench rpc-servers on loopback (CUDA0 on :50052 with a tensor cache, the CPU on
# :50053), fetches the files, runs bench/h200-rpc.toml, then runs the RPC-GPU model again so
# that its load takes the weights from the server's cache; stops the servers (SIGTERM).
set -euo pipefail
qb="$1" out="$2"
here="$(cd "$(dirname "$0")" && pwd)"
work="${WORK:-/tmp/qb-rpc}"
mkdir -p "$work" "$out"
cp "$here/h200-rpc.toml" "$work/models.toml"
cd "$work"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" || true
"$qb" --cache-dir "$work/rpc-tensors" rpc-server --device CUDA0 --port 50052 \
  > "$out/server-gpu.log" 2>&1 &
gpu_pid=$!
"$qb" rpc-server --device CPU --port 50053 --threads "$(nproc)" > "$out/server-cpu.log" 2>&1 &
cpu_pid=$!
trap 'kill -TERM $gpu_pid $cpu_pid 2>/dev/null || true' EXIT
( time "$qb" fetch -c models.toml ) > "$out/fetch.log" 2>&1
( time timeout 360 "$qb" run -c models.toml --out "$work/runs" ) > "$out/run.log" 2>&1 \
  || echo "run exited $?" >> "$out/run.log"
( time timeout 120 "$qb" run -c models.toml --out "$work/cached" --only rpc-gpu ) \
  > "$out/run-cached.log" 2>&1 || echo "cached run exited $?" >> "$out/run-cached.log"
kill -TERM $gpu_pid $cpu_pid; wait $gpu_pid $cpu_pid || true
trap - EXIT
tail -n 25 "$out/run.log"
