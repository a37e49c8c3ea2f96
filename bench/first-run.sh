#!/usr/bin/env bash
# Times the README's two commands from a fresh clone of COMMIT, each with an empty cargo target
# and an empty model cache (cargo's registry and apt's packages as the machine has them):
#   bench/first-run.sh COMMIT OUT [run|test|both]
# OUT gets per command: the stderr lines with a timestamp each (seconds since the epoch),
# /usr/bin/time's figures, and times.txt with: the whole command, the end of the first cell
# (the first result), and for `run` a second, unchanged run: seconds until its first cell
# started measuring. Nothing else should run on the machine meanwhile.
set -euo pipefail
commit="$1" out="$(mkdir -p "$2" && cd "$2" && pwd)" what="${3:-both}"
src="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
work="$(mktemp -d "${TMPDIR:-/tmp}/first-run.XXXXXX")"
stamp() { while IFS= read -r l; do printf '%s %s\n' "$(date +%s.%N)" "$l"; done; }
first() { awk -v p="$2" 'index($0, p) { print $1; exit }' "$1"; }
fresh() { # NAME: a clone of COMMIT with its own target and cache
  rm -rf "$work/$1"
  git clone -q "$src" "$work/$1/repo"
  git -C "$work/$1/repo" checkout -q "$commit"
  export QUANTBENCH_CACHE="$work/$1/cache" CARGO_TARGET_DIR="$work/$1/target"
  # the pinned llama-server is part of what a fresh clone builds (scripts/test)
  unset QUANTBENCH_LLAMA_SERVER
}
echo "commit $commit ($(git -C "$src" log -1 --format=%s "$commit"))" > "$out/times.txt"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load before: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/times.txt"
if [ "$what" != test ]; then
  fresh run
  cd "$work/run/repo"
  t0=$(date +%s.%N)
  /usr/bin/time -v scripts/quantbench run > "$out/run.stdout" 2> >(stamp > "$out/run.stderr")
  t1=$(date +%s.%N)
  sleep 1
  built=$(first "$out/run.stderr" "quantbench 0.1.0:")
  cell1=$(first "$out/run.stderr" "  text ")
  echo "run: whole $(echo "$t1 - $t0" | bc) s; build done after $(echo "$built - $t0" | bc) s; first result (end of cell 1) after $(echo "$cell1 - $t0" | bc) s" >> "$out/times.txt"
  t2=$(date +%s.%N)
  scripts/quantbench run > /dev/null 2> >(stamp > "$out/run2.stderr")
  sleep 1
  test1=$(first "$out/run2.stderr" "TEST 1/")
  echo "second run of the unchanged tree: first cell started after $(echo "$test1 - $t2" | bc) s" >> "$out/times.txt"
  cd "$src"
fi
if [ "$what" != run ]; then
  fresh test
  cd "$work/test/repo"
  t0=$(date +%s.%N)
  /usr/bin/time -v scripts/test > "$out/test.stdout" 2> >(stamp > "$out/test.stderr") || echo "scripts/test failed" >> "$out/times.txt"
  t1=$(date +%s.%N)
  echo "test: whole $(echo "$t1 - $t0" | bc) s" >> "$out/times.txt"
  t2=$(date +%s.%N)
  scripts/test > "$out/test2.stdout" 2>&1 || echo "scripts/test (warm) failed" >> "$out/times.txt"
  echo "test, warm tree: $(echo "$(date +%s.%N) - $t2" | bc) s" >> "$out/times.txt"
  cd "$src"
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/times.txt"
cat "$out/times.txt"
rm -rf "$work"
