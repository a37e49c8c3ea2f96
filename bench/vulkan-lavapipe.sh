#!/usr/bin/env bash
# Makes reports/vulkan-lavapipe-<date>/ on a machine without a GPU: llama.cpp's Vulkan backend
# on Mesa's lavapipe beside the CPU backend (bench/vulkan-lavapipe.toml).
#   bench/vulkan-lavapipe.sh QUANTBENCH OUT
# QUANTBENCH is a build with the Vulkan module (cargo build --release --features vulkan);
# lavapipe comes from `bash scripts/prereqs.sh --lavapipe`. llama.cpp's Vulkan backend skips
# drivers that run on the CPU unless GGML_VK_VISIBLE_DEVICES names them: 0 is lavapipe where it
# is the only Vulkan driver with a device (vulkaninfo --summary).
set -euo pipefail
qb="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")" out="$2"
here="$(cd "$(dirname "$0")" && pwd)"
work="${WORK:-/tmp/qb-lavapipe}"
mkdir -p "$work" "$out"
out="$(cd "$out" && pwd)"
cp "$here/vulkan-lavapipe.toml" "$work/models.toml"
cd "$work"
export QUANTBENCH_CACHE="$work/cache" GGML_VK_VISIBLE_DEVICES="${GGML_VK_VISIBLE_DEVICES:-0}"
{ vulkaninfo --summary 2>&1 | sed -n '/^Devices:/,$p' || true; nproc; uptime; } > "$out/machine.txt"
"$qb" list -c models.toml > "$out/list.txt" 2>&1
( time "$qb" run -c models.toml --out "$work/runs" --threads "$(nproc)" ) > "$out/run.log" 2>&1 \
  || echo "run exited $?" >> "$out/run.log"
cp -r "$work/runs/"* "$out/"
tail -n 40 "$out/run.log"
