#!/usr/bin/env bash
# validation set: 12 more back-to-back runs of the default matrix, measured after the CPU
# thresholds were chosen on the first set
cd /tmp/study
export QUANTBENCH_CACHE=/tmp/study/cache
for i in $(seq 1 12); do
  echo "B run $i start $(date -u +%FT%TZ)" >> progressB.log
  /tmp/old-bin/quantbench run --out /tmp/study/runsB --no-plots > runB-$i.log 2>&1
  echo "B run $i exit $? end $(date -u +%FT%TZ)" >> progressB.log
done
echo done >> progressB.log
