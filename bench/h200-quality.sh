#!/usr/bin/env bash
# Makes reports/h200-quality-<date>/ on a GPU host: bench/h200-quality.toml with its corpus, the
# quality test's time per cell (quality_s) and the same matrix without the test.
#   bench/h200-quality.sh QUANTBENCH_BINARY CORPUS.txt OUT_DIR
set -euo pipefail
qb="$1" corpus="$2" out="$3"
here="$(cd "$(dirname "$0")" && pwd)"
work="${WORK:-/tmp/qb-quality}"
mkdir -p "$work" "$out"
cp "$here/h200-quality.toml" "$work/models.toml"
cp "$corpus" "$work/corpus.txt"
sha256sum "$work/corpus.txt" | tee "$out/corpus.sha256"
cd "$work"
( time "$qb" fetch -c models.toml ) > "$out/fetch.log" 2>&1
( time "$qb" run -c models.toml --out "$work/q" ) 2>&1 | tee "$out/run.log"
( time "$qb" run -c models.toml --out "$work/s" --no-quality --no-plots ) > "$out/run-no-quality.log" 2>&1
cp -r "$work"/q/* "$out/quality"
cp -r "$work"/s/* "$out/no-quality"
