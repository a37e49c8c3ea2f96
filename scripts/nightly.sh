#!/usr/bin/env bash
# The nightly regression gate: run the matrix, compare it with the stored baseline, append one row
# per cell to <out>/history.csv (open it in a spreadsheet to see the trend), keep the last N runs.
#
#   scripts/nightly.sh [--config models.toml] [--out reports] [--baseline FILE] [--keep 14]
#                      [--update-baseline] [-- extra `quantbench run` arguments]
#
# The first night, when there is no baseline yet, the run becomes the baseline. Later nights are
# compared with it; --update-baseline replaces it after a night with no regression and no failed
# cell (without it the baseline stays fixed, so slow drifts add up and get caught).
# Exit status: quantbench's (0 ok, 1 regression, 2 setup error, 3 failed cells, 130 interrupted).
# QUANTBENCH=path/to/quantbench runs a given binary instead of building with scripts/quantbench.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
config=models.toml out=reports baseline="" keep=14 update=0 extra=()
while (($#)); do
  case "$1" in
    --config) config="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --baseline) baseline="$2"; shift 2 ;;
    --keep) keep="$2"; shift 2 ;;
    --update-baseline) update=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "nightly.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
baseline="${baseline:-$out/baseline.json}"
qb="${QUANTBENCH:-$root/scripts/quantbench}"
args=(run --config "$config" --out "$out")
if [ -f "$baseline" ]; then
  args+=(--baseline "$baseline")
  [ "$update" = 1 ] && args+=(--save-baseline "$baseline")
else
  echo "nightly.sh: no baseline at $baseline yet: this run becomes it" >&2
  args+=(--save-baseline "$baseline")
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
