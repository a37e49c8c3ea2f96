#!/usr/bin/env bash
# Makes reports/<gpu>-vulkan-<date>/ on one NVIDIA GPU host: CUDA against Vulkan on the same
# card (bench/gpu-vulkan.toml: the 7B shape at F16/Q8_0/Q4_K_M, devices CUDA0 and Vulkan0).
#   bench/gpu-vulkan.sh QUANTBENCH OUT
# QUANTBENCH is the binary of a release tarball (scripts/package.sh: it ships libggml-vulkan.so
# and, in vulkan-loader/, the Vulkan loader) with libggml-cuda.so put next to it
# (scripts/build-cuda-backend.sh). The script first records what the machine offers for Vulkan
# (loader, driver manifests, the devices llama.cpp registers) and stops, saying why, when
# llama.cpp sees no Vulkan device on the GPU: then only the lavapipe report stands. In a
# container NVIDIA's Vulkan driver is mounted only with NVIDIA_DRIVER_CAPABILITIES including
# `graphics` (e.g. `all`). Fetching (writing and quantizing the 7B model) takes a few minutes,
# the 6 cells about 3 more: for calls of at most 10 minutes, run it twice, first with
# FETCH_ONLY=1 (the second call finds the files in WORK's cache).
set -euo pipefail
qb="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")" out="$2"
here="$(cd "$(dirname "$0")" && pwd)"
work="${WORK:-/tmp/qb-vulkan}"
mkdir -p "$work" "$out"
out="$(cd "$out" && pwd)"
cp "$here/gpu-vulkan.toml" "$work/models.toml"
cd "$work"
export QUANTBENCH_CACHE="$work/cache"
{
  echo "## nvidia-smi"
  nvidia-smi --query-gpu=name,driver_version,memory.total,pci.bus_id --format=csv 2>&1 || true
  echo "## NVIDIA_DRIVER_CAPABILITIES=${NVIDIA_DRIVER_CAPABILITIES:-unset}"
  echo "## Vulkan loader"
  ldconfig -p 2>/dev/null | grep 'libvulkan\.so\.1' || echo "no libvulkan.so.1 on this machine"
  echo "## Vulkan driver manifests"
  ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d 2>&1 || true
  command -v vulkaninfo >/dev/null && vulkaninfo --summary 2>&1 | tail -n 30 || true
} > "$out/vulkan-env.txt"
# the loader the tarball ships, where the machine has none
loader="$(dirname "$qb")/vulkan-loader"
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' && [ -f "$loader/libvulkan.so.1" ]; then
  export LD_LIBRARY_PATH="$loader${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "## using the tarball's Vulkan loader ($loader)" >> "$out/vulkan-env.txt"
fi
"$qb" list -c models.toml --format json > "$out/list.json" 2> "$out/list.log"
if ! grep -q '"name": "Vulkan0"' "$out/list.json"; then
  {
    echo "No Vulkan device on this machine: llama.cpp's Vulkan backend registered none, so the"
    echo "CUDA-against-Vulkan matrix cannot run here; the lavapipe report stands."
    echo
    echo "What quantbench said (device_notes of list --format json):"
    python3 -c 'import json,sys; [print("-", n) for n in json.load(open(sys.argv[1]))["device_notes"]]' \
      "$out/list.json" 2>/dev/null || cat "$out/list.log"
    echo
    echo "What the machine offers: vulkan-env.txt"
  } | tee "$out/NO-VULKAN.md" >&2
  exit 3
fi
grep -B1 -A8 '"name": "Vulkan0"' "$out/list.json" >&2
( time "$qb" fetch -c models.toml ) > "$out/fetch.log" 2>&1
if [ -n "${FETCH_ONLY:-}" ]; then tail -n 5 "$out/fetch.log"; exit 0; fi
( time timeout 540 "$qb" run -c models.toml --out "$work/runs" ) > "$out/run.log" 2>&1 \
  || echo "run exited $?" >> "$out/run.log"
cp -r "$work/runs/"* "$out/" 2>/dev/null || true
tail -n 25 "$out/run.log"
