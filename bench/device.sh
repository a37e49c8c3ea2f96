#!/usr/bin/env bash
# On the GPU host, in the repository copy the device tool sends, with .gpu/ carried (git-ignored):
# the release tarball (scripts/package.sh) and libggml-cuda.so.xz.part-* (the prebuilt CUDA
# module, in parts; see docs/gpus.md). Runs
# the GPU reports' steps, each within one 10-minute call, and leaves the run folders packed in
# $OUT (the tool brings back at most 8 files):
#   bash bench/device.sh serve      # 7B shape: served cells (bench/h200-serving.sh)
#   bash bench/device.sh tune       # 7B shape: quantbench tune under 8 GiB
#   bash bench/device.sh STEP...    # several in one call, in order
set -euo pipefail
root="$(pwd)"
out="${OUT:-/tmp/out}"
mkdir -p "$out" /tmp/qb
d="$(ls -d /tmp/qb/quantbench-* 2>/dev/null | head -n1 || true)"
if [ -z "$d" ]; then
  tar -C /tmp/qb -xJf "$(ls .gpu/quantbench-*.tar.xz | head -n1)"
  d="$(ls -d /tmp/qb/quantbench-* | head -n1)"
fi
[ -f "$d/libggml-cuda.so" ] || cat .gpu/libggml-cuda.so.xz.part-* | xz -d -T0 > "$d/libggml-cuda.so"
export WORK=/tmp/qb-work QUANTBENCH_CACHE=/tmp/qb-cache
mkdir -p "$WORK"
"$d/quantbench" list -c bench/h200-serving.toml 2>&1 | head -5 > "$out/list.txt" || true
for step in "$@"; do
  case "$step" in
    serve|tune)
      bash bench/h200-serving.sh "$d/quantbench" "$WORK/out-$step" "$step" || echo "$step failed: $?" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
  # the run folders, without the charts (report DIR redraws them), and the logs
  tar -C "$WORK" -cJf "$out/$step.tar.xz" --exclude='*.png' --exclude='*.svg' "$step" "out-$step"
done
ls -la "$out"
