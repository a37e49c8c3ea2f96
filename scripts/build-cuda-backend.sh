#!/usr/bin/env bash
# Build llama.cpp's CUDA backend module (libggml-cuda.so) for quantbench on a machine with the
# CUDA toolkit (nvcc, cuBLAS) and cmake, but no Rust. The module must come from the same
# llama.cpp quantbench was built with: the sources vendored in the crate llama-cpp-sys-2 0.1.161.
#
#   scripts/build-cuda-backend.sh [--src LLAMA_CPP_DIR | --src-tar FILE] [--arch 90] [--out DIR]
#
#   --src DIR      an unpacked llama.cpp folder of that crate (e.g. copied from
#                  ~/.cargo/registry/src/*/llama-cpp-sys-2-0.1.161/llama.cpp on a Rust machine)
#   --src-tar FILE a tarball holding that folder (scripts/package.sh --with-llama-src makes one)
#   (neither)      download the crate from crates.io and use its llama.cpp folder
#   --arch LIST    CMAKE_CUDA_ARCHITECTURES (default: native = the GPUs of this machine;
#                  90 = H100/H200, 89 = L40S/RTX 4090, 80 = A100)
#   --out DIR      where to put libggml-cuda.so (default: dist/)
#
# Then run quantbench with the module next to its binary, or with --backend-dir DIR.
# About 4 minutes on 16 cores for one architecture.
set -euo pipefail
crate_version=0.1.161
src="" tarball="" arch="native" out=""
root="$(cd "$(dirname "$0")/.." && pwd)"
while (($#)); do
  case "$1" in
    --src) src="$2"; shift 2 ;;
    --src-tar) tarball="$2"; shift 2 ;;
    --arch) arch="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
out="${out:-$root/dist}"
command -v cmake >/dev/null || { echo "cmake is needed" >&2; exit 2; }
command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || { echo "nvcc (the CUDA toolkit) is needed" >&2; exit 2; }
[ -x /usr/local/cuda/bin/nvcc ] && export PATH="/usr/local/cuda/bin:$PATH"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ -z "$src" ]; then
  if [ -z "$tarball" ]; then
    url="https://static.crates.io/crates/llama-cpp-sys-2/llama-cpp-sys-2-$crate_version.crate"
    echo "downloading $url" >&2
    curl -fsSL "$url" -o "$work/crate.tar.gz"
    tarball="$work/crate.tar.gz"
  fi
  tar -xf "$tarball" -C "$work"
  src="$(find "$work" -maxdepth 3 -type d -name llama.cpp | head -n1)"
  [ -n "$src" ] || { echo "no llama.cpp folder in $tarball" >&2; exit 2; }
fi
[ -f "$src/ggml/src/ggml-cuda/CMakeLists.txt" ] || { echo "$src is not a llama.cpp source folder" >&2; exit 2; }
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S "$src" -B "$work/build" "${gen[@]}" -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  -DGGML_BACKEND_DL=ON -DBUILD_SHARED_LIBS=ON -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_NATIVE=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_COMMON=OFF \
  -DGGML_CUDA_NCCL=OFF -DCMAKE_BUILD_TYPE=Release >&2
cmake --build "$work/build" --target ggml-cuda -j "$(nproc)" >&2
mkdir -p "$out"
cp "$(find "$work/build" -name 'libggml-cuda.so' -type f | head -n1)" "$out/libggml-cuda.so"
echo "$out/libggml-cuda.so"
