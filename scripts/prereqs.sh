#!/usr/bin/env bash
# Installs what building quantbench needs when it is missing: cmake and libclang (for the
# llama.cpp crates), via apt-get. Sourced by scripts/quantbench, scripts/test and .ci/run.
#
#   bash scripts/prereqs.sh             # the default build
#   bash scripts/prereqs.sh --vulkan    # also what `--features vulkan` builds with: glslc (the
#                                       # shader compiler), libvulkan-dev, spirv-headers
#   bash scripts/prereqs.sh --lavapipe  # also Mesa's Vulkan drivers (lavapipe runs Vulkan on the
#                                       # CPU: the Vulkan tests) and the Vulkan loader
set -euo pipefail
vulkan=0 lavapipe=0
for a in "$@"; do
  case "$a" in
    --vulkan) vulkan=1 ;;
    --lavapipe) lavapipe=1 ;;
    *) echo "prereqs.sh: unknown argument $a (--vulkan, --lavapipe)" >&2; exit 2 ;;
  esac
done
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
  missing+=(libclang-dev)
fi
command -v c++ >/dev/null 2>&1 || missing+=(g++)
if ((vulkan)); then
  command -v glslc >/dev/null 2>&1 || missing+=(glslc)
  [ -f /usr/include/vulkan/vulkan.hpp ] || missing+=(libvulkan-dev)
  [ -d /usr/include/spirv ] || missing+=(spirv-headers)
fi
if ((lavapipe)); then
  ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || missing+=(mesa-vulkan-drivers)
  ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1 ' || missing+=(libvulkan1)
fi
if ((${#missing[@]})); then
  echo "quantbench: installing build prerequisites: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
