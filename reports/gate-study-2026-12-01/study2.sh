#!/usr/bin/env bash
# two more runs: confirmation stand-ins for the last runs of the series
cd /tmp/study
export QUANTBENCH_CACHE=/tmp/study/cache
for i in 11 12; do
  echo "run $i start $(date -u +%FT%TZ)" >> progress.log
  /tmp/old-bin/quantbench run --out /tmp/study/runs --no-plots > run-$i.log 2>&1
  echo "run $i exit $? end $(date -u +%FT%TZ)" >> progress.log
done
echo done2 >> progress.log
