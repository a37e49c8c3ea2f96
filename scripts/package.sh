#!/usr/bin/env bash
# Package quantbench for running on another x86-64 Linux machine (glibc >= 2.36):
#   dist/quantbench-<version>-linux-x86_64.tar.xz
# holding the binary, llama.cpp's shared libraries, every CPU backend module (ggml picks the best
# one for the CPU at run time), the RPC backend module (libggml-rpc.so), the Vulkan backend
# module (libggml-vulkan.so: built with --features vulkan; it needs the Vulkan loader
# libvulkan.so.1 and a driver at run time, the binary does not), libgomp, and in llama-server/
# the pinned llama.cpp's llama-server and tools (scripts/build-llama-server.sh). The binary finds them next to itself ($ORIGIN). Add
# a GPU backend by putting its module (e.g. libggml-cuda.so) in the same folder or in a folder
# named with --backend-dir.
#
#   scripts/package.sh                    # builds (release, every CPU variant, in target/package)
#                                         # if needed
#   scripts/package.sh --with-llama-src   # also dist/llama.cpp-src.tar.xz: the llama.cpp sources
#                                         # of the pinned crate, for scripts/build-cuda-backend.sh
#                                         # on a GPU host without network
set -euo pipefail
with_src=0
[ "${1:-}" = "--with-llama-src" ] && with_src=1
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# QUANTBENCH_PACKAGE_VULKAN=0 leaves the Vulkan module out (a smaller tarball for a host known
# to have no Vulkan driver)
vulkan_on="${QUANTBENCH_PACKAGE_VULKAN:-1}"
if [ "$vulkan_on" = 1 ]; then
  bash scripts/prereqs.sh --vulkan
  features=(--features vulkan)
else
  bash scripts/prereqs.sh
  features=()
fi
# every CPU backend variant (the tarball runs on any x86-64 machine; a local build has only
# this machine's): its own build folder, as the choice is made once per build of llama.cpp
# (QUANTBENCH_CPU_VARIANTS=haswell, say, packages that one variant only: a tarball for
# machines known to run it, built in a folder of its own)
export QUANTBENCH_CPU_VARIANTS="${QUANTBENCH_CPU_VARIANTS:-all}"
default_target="$root/target/package"
[ "$QUANTBENCH_CPU_VARIANTS" = all ] || default_target="$root/target/package-$QUANTBENCH_CPU_VARIANTS"
export CARGO_TARGET_DIR="${QUANTBENCH_PACKAGE_TARGET:-$default_target}"
bash scripts/build.sh "${features[@]}"
target="$CARGO_TARGET_DIR"
bin="$target/release/quantbench"
version="$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)"
name="quantbench-$version-linux-x86_64"
stage="$root/dist/$name"
rm -rf "$stage" && mkdir -p "$stage"
cp "$bin" "$stage/"
# llama.cpp's libraries under their sonames, as the binary asks for them
for lib in $(ldd "$bin" | awk '/libllama|libggml/ {print $3}'); do
  cp -L "$lib" "$stage/$(basename "$lib")"
done
# the CPU backend modules the build installed (the folder the binary also searches at run time)
backends="$(find "$target/release/build" -path '*llama-cpp-sys-2-*/out/backends' -type d -newer Cargo.toml | head -n1)"
[ -n "$backends" ] || backends="$(find "$target/release/build" -path '*llama-cpp-sys-2-*/out/backends' -type d | head -n1)"
cp "$backends"/libggml-*.so "$stage/"
n_cpu="$(ls "$backends"/libggml-cpu*.so | wc -l)"
if [ "$QUANTBENCH_CPU_VARIANTS" = all ] && [ "$(uname -m)" = x86_64 ] && [ "$n_cpu" -lt 10 ]; then
  echo "package.sh: only $n_cpu CPU backend variants in $backends; the tarball needs all of them (a build folder made without QUANTBENCH_CPU_VARIANTS=all? remove it)" >&2
  exit 2
fi
# llama.cpp's RPC backend module, built by quantbench's build script (the newest build of it)
rpc="$(find "$target/release/build" -path '*quantbench-*/out/backends/libggml-rpc.so' -printf '%T@ %p\n' | sort -nr | head -n1 | cut -d' ' -f2-)"
[ -n "$rpc" ] || { echo "libggml-rpc.so was not built" >&2; exit 2; }
cp "$rpc" "$stage/"
# llama.cpp's Vulkan backend module, built by quantbench's build script with --features vulkan
if [ "$vulkan_on" = 1 ]; then
  vulkan="$(find "$target/release/build" -path '*quantbench-*/out/backends/libggml-vulkan.so' -printf '%T@ %p\n' | sort -nr | head -n1 | cut -d' ' -f2-)"
  [ -n "$vulkan" ] || { echo "libggml-vulkan.so was not built" >&2; exit 2; }
  cp "$vulkan" "$stage/"
  # the Vulkan loader, for a GPU host that has a Vulkan driver but no libvulkan.so.1 (a
  # container without Debian's libvulkan1): not next to the binary, where it would shadow the
  # machine's own; bench/gpu-vulkan.sh puts it on LD_LIBRARY_PATH only when the machine has none
  mkdir -p "$stage/vulkan-loader"
  cp -L "$(ldconfig -p | awk '/libvulkan\.so\.1 / {print $NF; exit}')" "$stage/vulkan-loader/libvulkan.so.1"
fi
# OpenMP runtime of the CPU backend: not on every machine
cp -L "$(ldd "$(ls "$backends"/libggml-cpu*.so | head -n1)" | awk '/libgomp/ {print $3}')" "$stage/"
strip --strip-unneeded "$stage"/*.so* "$stage/quantbench" 2>/dev/null || true
# llama-server of the pinned llama.cpp (and the oracle tools), with their own libraries in a
# folder of their own (their libllama/libggml are the same sources built apart from the crate's)
tools="$(bash scripts/build-llama-server.sh)"
mkdir -p "$stage/llama-server"
cp -P "$tools"/* "$stage/llama-server/"
cp "$tools/../LICENSE-llama.cpp" "$stage/llama-server/"
cp -r README.md LICENSE CONTRIBUTING.md models.toml docs "$stage/"
# the reports' write-ups the docs link to (their raw data stays in the repository)
git ls-files 'reports/*.md' | while read -r f; do
  mkdir -p "$stage/$(dirname "$f")" && cp "$f" "$stage/$f"
done
tar -C "$root/dist" -cJf "$root/dist/$name.tar.xz" "$name"
ls -la "$root/dist/$name.tar.xz"
if [ "$with_src" = 1 ]; then
  cache="$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$backends/../build/CMakeCache.txt")"
  tar -C "$(dirname "$cache")" -cJf "$root/dist/llama.cpp-src.tar.xz" "$(basename "$cache")"
  ls -la "$root/dist/llama.cpp-src.tar.xz"
fi
