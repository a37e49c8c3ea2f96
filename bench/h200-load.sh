#!/usr/bin/env bash
# Makes reports/h200-load-<date>/ on a GPU host in two steps (each fits a 10-minute call):
#   bench/h200-load.sh QUANTBENCH small OUT   # fetch every file, then GPT-2 and GPT-2-Medium
#   bench/h200-load.sh QUANTBENCH large OUT   # the 7B shape (n_parallel sweep, then depth)
# A step cut short is continued by running it again (quantbench run --resume).
set -euo pipefail
qb="$1" step="$2" out="$3"
here="$(cd "$(dirname "$0")" && pwd)"
work="${WORK:-/tmp/qb-load}"
mkdir -p "$work/$step" "$out"
cp "$here/h200-load.toml" "$work/models.toml"
cd "$work"
case "$step" in
  small) only=(--only gpt2 --only gpt2-medium)
         ( time "$qb" fetch -c models.toml ) > "$out/fetch.log" 2>&1 ;;
  large) only=(--only llama-7b --only llama-7b-depth) ;;
esac
prev="$(ls -d "$work/$step"/*/ 2>/dev/null | tail -n1 || true)"
resume=()
[ -n "$prev" ] && resume=(--resume "$prev")
( time timeout 540 "$qb" run -c models.toml --out "$work/$step" "${only[@]}" "${resume[@]}" ) \
  > "$out/run-$step.log" 2>&1 || echo "run $step exited $?" >> "$out/run-$step.log"
tail -n 30 "$out/run-$step.log"
