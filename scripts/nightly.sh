#!/usr/bin/env bash
# The nightly regression gate: run the matrix, compare it with the stored baseline, append one row
# per cell to <out>/history.csv (open it in a spreadsheet to see the trend), keep the last N runs.
#
#   scripts/nightly.sh [--config models.toml] [--out reports] [--baseline DIR] [--baseline-runs 5]
#                      [--keep 14] [-- extra `quantbench run` arguments]
#
# The baseline is a folder of runs (default <out>/baseline/). The first nights' clean runs (no
# failed cell, no regression, no cell measured on a busy machine) are added to it until it holds
# --baseline-runs of them; from then on
# it stays fixed, so slow drifts add up and get caught. With three or more baseline runs the gate
# tests each night against their spread, which is what two runs of the same build differ by.
# Exit status: quantbench's (0 ok, 1 regression, 2 setup error, 3 failed cells, 4 inconclusive:
# a busy machine, retry; 130 interrupted).
# QUANTBENCH=path/to/quantbench runs a given binary instead of building with scripts/quantbench.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
config=models.toml out=reports baseline="" keep=14 want=5 extra=()
while (($#)); do
  case "$1" in
    --config) config="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --baseline) baseline="$2"; shift 2 ;;
    --keep) keep="$2"; shift 2 ;;
    --baseline-runs) want="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "nightly.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
baseline="${baseline:-$out/baseline}"
qb="${QUANTBENCH:-$root/scripts/quantbench}"
args=(run --config "$config" --out "$out")
have="$(ls -1 "$baseline"/*.json 2>/dev/null | wc -l)"
if [ "$have" -gt 0 ]; then
  args+=(--baseline "$baseline")
fi
if [ "$have" -lt "$want" ]; then
  echo "nightly.sh: the baseline holds $have of $want runs: a clean run tonight joins it" >&2
  args+=(--save-baseline "$baseline/")
fi
"$qb" "${args[@]}" "${extra[@]}"
code=$?

latest="$(ls -1d "$out"/2*/ 2>/dev/null | sort | tail -n1)"
if [ -n "$latest" ] && [ -f "$latest/results.csv" ]; then
  history="$out/history.csv"
  header="$(head -n1 "$latest/results.csv")"
  if [ -f "$history" ] && [ "$(head -n1 "$history")" != "$header" ]; then
    # columns were added by a newer quantbench: start a new history, keep the old one
    mv "$history" "$out/history-until-$(date -u +%Y%m%dT%H%M%SZ).csv"
  fi
  [ -f "$history" ] || printf '%s\n' "$header" > "$history"
  tail -n +2 "$latest/results.csv" >> "$history"
fi
# keep the newest $keep run folders (named by UTC timestamp)
ls -1d "$out"/2*/ 2>/dev/null | sort | head -n -"$keep" | xargs -r rm -rf --
exit "$code"
