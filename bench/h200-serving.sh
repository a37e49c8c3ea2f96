#!/usr/bin/env bash
# On a GPU host, from the unpacked release tarball (quantbench, its modules, llama-server/) with
# libggml-cuda.so next to the binary:
#   bench/h200-serving.sh QUANTBENCH OUT        # served cells of the 7B shape (serving report)
#   bench/h200-serving.sh QUANTBENCH OUT tune   # quantbench tune under an 8 GiB budget
# A step cut short is continued by running it again (--resume).
set -euo pipefail
qb="$1" out="$2" step="${3:-serve}"
here="$(cd "$(dirname "$0")" && pwd)"
work="${WORK:-/tmp/qb-serving}"
mkdir -p "$work/$step" "$out"
cp "$here/h200-serving.toml" "$work/models.toml"
cd "$work"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.csv" 2>&1 || true
prev="$(ls -d "$work/$step"/*/ 2>/dev/null | tail -n1 || true)"
resume=()
[ -n "$prev" ] && resume=(--resume "$prev")
case "$step" in
  serve)
    ( time timeout 560 "$qb" run -c models.toml --out "$work/$step" "${resume[@]}" ) \
      > "$out/run-serve.log" 2>&1 || echo "run exited $?" >> "$out/run-serve.log" ;;
  tune)
    # F16 (14.5 GB) and Q8_0 (7.7 GB) only partly fit 8 GiB: the search bisects their layers
    ( time timeout 560 "$qb" tune -c models.toml --model llama-7b --memory 8GiB \
        --min-tok-s 150 --max-ttft-ms 500 --format json --out "$work/$step" "${resume[@]}" \
        > "$out/tune.json" ) > "$out/run-tune.log" 2>&1 || echo "tune exited $?" >> "$out/run-tune.log" ;;
esac
tail -n 40 "$out/run-$step.log"
