#!/usr/bin/env bash
# `cargo build --release ARGS` for the other scripts, saying what a first build does while it
# runs (llama.cpp's compilation is one silent step of cargo's for minutes).
#   scripts/build.sh                 # the binary
#   scripts/build.sh --tests         # the binary and the tests (no run)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root" # cargo reads .cargo/config.toml from the working directory
target="${CARGO_TARGET_DIR:-$root/target}"
watcher=""
if ! ls "$target"/release/build/llama-cpp-sys-2-*/out/lib/libllama.so >/dev/null 2>&1; then
  echo "quantbench: first build: compiling llama.cpp (only the CPU backend this machine runs) and quantbench; about 4 minutes on 2 cores, seconds afterwards" >&2
  start=$(date +%s)
  (
    while sleep "${QUANTBENCH_BUILD_PROGRESS_S:-30}"; do
      # (|| true: before the build folder exists, find fails, and set -e would end this loop)
      n=$(find "$target"/release/build/llama-cpp-sys-2-*/out/build -name '*.o' 2>/dev/null | wc -l || true)
      echo "quantbench: still building ($(( $(date +%s) - start )) s; llama.cpp: $n of about 75 objects)" >&2
    done
  ) &
  watcher=$!
  # the loop ends with this script, however it ends (a signal too: it was left running)
  trap 'kill "$watcher" 2>/dev/null || true' EXIT
fi
if [[ " $* " == *vulkan* ]] && ! ls "$target"/release/build/quantbench-*/out/backends/libggml-vulkan.so >/dev/null 2>&1; then
  echo "quantbench: --features vulkan: compiling llama.cpp's Vulkan backend (shaders, then the module) once; about 9 more minutes on 2 cores" >&2
fi
status=0
cargo build --release --quiet "$@" >&2 || status=$?
if [ -n "$watcher" ]; then kill "$watcher" 2>/dev/null || true; fi
exit "$status"
